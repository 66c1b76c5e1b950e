"""The parts of the film recommender (``mlservice.predictors.movie_recommendation``), by concern.

* ``sources``: the installed distributions everything is read from, found without importing them.
* ``catalog``: the film catalogue, its titles, release years and short summaries.
* ``embedding``: the MiniLM tokenizer and onnxruntime encoder that turn texts into vectors.
* ``cache``: the embedded catalogue kept in the model cache, and what it was built from.
"""

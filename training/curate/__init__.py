"""FLAME-QA curation: talking-face clips -> transcripts, per-frame face parameters, emotion labels, generated
questions and their speech -> a FLAME-QA dataset (``python -m training.curate --clips DIR --out DIR``).

Modules: :mod:`.media` (wav I/O, resampling), :mod:`.stages` (ASR, face import, emotion, QA, TTS backends),
:mod:`.pipeline` (per-clip resumable stages, manifest, process pool / Ray, packing into shards).
"""

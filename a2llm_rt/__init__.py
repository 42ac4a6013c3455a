"""The runtime library: everything the backend needs at inference (models, engine, speech, face maps, audio I/O).

It imports no transport (ZeroMQ, WebSocket, the bridge), no application (:mod:`apps`) and no training code
(``tests/test_layering.py``)."""

"""Browser viewer: a WebSocket gateway (:mod:`plugin_bridge.web.gateway`) relaying the bridge's binary messages, and
the page in ``page/`` (Vite + three.js + WebAudio). Run ``python -m plugin_bridge.web --server tcp://127.0.0.1:5555``.
"""

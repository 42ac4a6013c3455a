"""``python -m plugin_bridge.web``: run the WebSocket gateway and serve the browser viewer."""

from __future__ import annotations

import sys

from plugin_bridge.web.gateway import main

if __name__ == "__main__":
    sys.exit(main())

"""A tiny web app on Bottle (one PyPI dependency): GET / says hello, reading PORT like a cloud app."""
import os
import sys

import bottle

app = bottle.Bottle()


@app.route("/")
def index():
    return f"hello from python {sys.version_info[0]}.{sys.version_info[1]} and bottle {bottle.__version__}\n"


if __name__ == "__main__":
    # Bottle's built-in server (wsgiref) is single-threaded and pure Python: enough for an example.
    bottle.run(app, host="0.0.0.0", port=int(os.environ.get("PORT", "8080")), quiet=True)

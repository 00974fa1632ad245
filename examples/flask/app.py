"""A Flask app served by gunicorn: the first app most Heroku users push."""
import os

from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    # The commit kbuild built this from, by the environment the node agent gives each process.
    return f"hello from flask on {os.environ.get('KBUILD_APP', 'kbuild')}\n"


@app.route("/health")
def health():
    return "ok\n"

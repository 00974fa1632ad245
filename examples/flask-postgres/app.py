"""Notes kept in PostgreSQL: GET / lists them, POST /notes adds one (its body is the note)."""
import os

from flask import Flask, jsonify, request
from sqlalchemy import text

from db import engine

app = Flask(__name__)
db = engine()


@app.get("/")
def index():
    with db.connect() as c:
        notes = [row[0] for row in c.execute(text("select body from notes order by id"))]
        ssl = c.execute(text("select ssl from pg_stat_ssl where pid = pg_backend_pid()")).scalar()
    return jsonify(notes=notes, ssl=ssl, release=os.environ.get("KBUILD_RELEASE"))


@app.post("/notes")
def add():
    with db.begin() as c:
        c.execute(text("insert into notes (body) values (:body)"), {"body": request.get_data(as_text=True)})
    return "added\n", 201

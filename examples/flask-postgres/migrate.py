"""The release phase: the schema, made or brought up to date before a release serves."""
from sqlalchemy import text

from db import engine

with engine().begin() as c:
    c.execute(text("create table if not exists notes (id serial primary key, body text not null, at timestamptz not null default now())"))
print("migrated: table notes is there")

"""The app's database: DATABASE_URL as an add-on sets it, over TLS (as dj-database-url's ssl_require=True asks)."""
import os

from sqlalchemy import create_engine


def engine():
    url = os.environ["DATABASE_URL"].replace("postgres://", "postgresql+psycopg://", 1)
    return create_engine(url, connect_args={"sslmode": "require"}, pool_pre_ping=True)

"""Alembic environment: runs migrations on a connection handed in by dispatchd.

dispatchd never uses alembic.ini or a URL of alembic's own: ``dispatch.storage``
opens the connection (SQLite or PostgreSQL) and passes it in
``config.attributes["connection"]``.
"""

from alembic import context

from dispatch.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()

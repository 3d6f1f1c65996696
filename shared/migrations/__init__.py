"""noisyfit's schema migrations (Alembic), configured in code by shared/db.py; no alembic.ini.

versions/0001_initial_schema.py is the schema that `create_all` made before migrations. To
change the schema, edit shared/models.py, then write the next revision from the difference:

    NOISYFIT_DATABASE_URL=sqlite:///var/scratch.db python -m shared.db revision -m "add job priority"

That upgrades the scratch database to the current head and writes versions/NNNN_add_job_priority.py
(SQLite gets batch operations, which PostgreSQL runs as plain ALTERs). Read and fix it before you
commit: autogenerate misses renames and server defaults. tests/shared/test_migrations.py then
fails until the models and the migrations agree, on PostgreSQL and SQLite, and checks that an
upgrade keeps the rows.
"""

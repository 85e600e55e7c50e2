"""The database side: connecting, naming what went wrong, storing rows, migrations. The only
package that imports psycopg (see docs/architecture.md)."""

"""The directory itself: companies, users, catalogues, application instances and access.

One module per resource. Each write function runs inside the transaction
:meth:`cloud.store.Store.write` opened, takes the connection and the current time, and
returns an :class:`~cloud.store.Outcome` (status, body, the one effect to audit) or raises
:class:`~cloud.errors.ApiError` (which rolls the transaction back). No HTTP here.

A write answers with the row as it wrote it (the values it bound, the version it set),
not read back: the tables have no defaults or triggers that would change them, and a
read-back per write was a fifth of a batched write's statements.
"""

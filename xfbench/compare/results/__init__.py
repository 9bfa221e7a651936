"""The result model and its persistence: typed cells and results, the schema and its migrations, atomic files and
the journal of a run in progress, the ``ab`` document and the SQLite store.

Layers inside, each importing only those before it: ``files`` -> ``journal`` -> ``schema`` -> ``views`` ->
``cell`` -> ``result`` -> ``ab`` -> ``store``. Nothing here imports statistics, processes or reports.
"""

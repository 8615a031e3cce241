"""``streamwise bench``: each pipeline measured through the real broker against baselines
taken in the same run.

One module per pipeline (``transactions``, ``audio``, ``video``) on shared parts: ``harness``
(a run's settings, topics and cleanup), ``worker_process``, ``host`` (reference loop, probe,
pinning), ``load`` and ``passthrough`` (the transactions load and the broker's own speed),
``reader`` (predictions), ``measure``, ``report``, ``scrape`` (metrics pages) and ``waiting``.
The Kafka clients they use live in :mod:`pipelines.kafka.bulk_io`.
"""

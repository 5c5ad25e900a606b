"""cloud-capture: follows the cloud's change feed and publishes what administrators changed.

The writeback path's first stage (issue 16): ``GET /v1/changes`` → :class:`schemas.cloud_changes.
CloudAccessChanged` on ``vud.cloud.changes``, keyed by the on-premise user id. The pure
feed-item → event mapping is :mod:`cloudcapture.mapping`; the loop (cursor, full reads, commit
order) is :mod:`cloudcapture.capture`; the composition root is :mod:`cloudcapture.service`.
"""

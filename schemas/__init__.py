"""The contract of vudsync: events, operations, results, topics. Depends on nothing of ours."""

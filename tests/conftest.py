pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.kafka_cluster",
    "tests.fixtures.cloud",
    "tests.fixtures.postgres",
    "tests.fixtures.prometheus",
]

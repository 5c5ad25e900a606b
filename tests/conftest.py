pytest_plugins = [
    "tests.fixtures.kafka",
    "tests.fixtures.cloud",
    "tests.fixtures.postgres",
    "tests.fixtures.prometheus",
]

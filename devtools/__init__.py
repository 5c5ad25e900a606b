"""Developer tools: the local Kafka broker, a throwaway PostgreSQL server, sample data, the
demo and the benchmarks. Nothing in the runtime packages imports them, so a production image
can leave this package out."""

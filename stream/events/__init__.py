"""The event contract every process shares: the wire schema, one decoder of a Kafka record into
an effect or a dead letter, pseudonyms, topics, the producer SDK, event files and samples."""

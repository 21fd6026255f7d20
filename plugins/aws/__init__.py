"""wrencore's AWS plugin: S3 storage and the helpers every AWS backend shares."""

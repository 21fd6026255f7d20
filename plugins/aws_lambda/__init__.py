"""wrencore's AWS Lambda backend: runtime package build, deploy, invoke."""

"""The router: the public gRPC front door that detects the language and routes to workers."""

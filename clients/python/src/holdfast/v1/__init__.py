"""Generated from proto/proto/holdfast/v1/holdfast.proto when the package is built."""

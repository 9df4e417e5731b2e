//! Inference with a KV cache.

//! transformer-playground: a configurable Transformer (GPT, BERT, encoder-decoder) that trains in the browser.
//!
//! Shape letters used throughout: B batch, T sequence length, S encoder (memory) length, C d_model, NH query heads,
//! NKV key/value heads, HS = C/NH head size, F FFN hidden width, V vocabulary, L layers.
//!
//! Layers, each using only the ones before it (docs/ARCHITECTURE.md): `config` → `backend` (the op trait and its
//! reference, CPU and GPU implementations) → `model` (written once over the op trait) → `train` / `generate` /
//! `probe` (with `data`) → `recipes` (built on
//! them) and `checkpoint` → the CLI (`bin/tp`) and the browser facade (`wasm`).

// Kernels take outputs, caches, inputs, parameters and sizes as separate arguments (llm.c's convention).
#![allow(clippy::too_many_arguments)]

pub mod attention_cost;
pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod denoise;
pub mod error;
pub mod facade;
pub mod generate;
pub mod model;
pub mod position_terms;
pub mod probe;
pub mod recipes;
pub mod rng;
pub mod trace;
pub mod train;

pub use config::Config;
pub use error::{Error, Result};
#[cfg(target_arch = "wasm32")]
pub mod wasm;

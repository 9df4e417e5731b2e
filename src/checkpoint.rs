//! Checkpoints: a model, its config, its tokenizer, the training step and (optionally) the AdamW moments, in one
//! [safetensors](https://github.com/huggingface/safetensors) file that PyTorch can read directly.
//!
//! The format is specified in `docs/CHECKPOINT.md`:
//! - one little-endian `F32` tensor per parameter tensor of the [`Layout`], under its documented name
//!   (docs/MODEL.md) and with its documented shape;
//! - with optimizer state, also `optim.m.<name>` and `optim.v.<name>` (same shape) for every parameter tensor;
//! - string metadata: `format` = `"transformer-playground"`, `format_version` = `"1"`, `config` (the [`Config`] as
//!   JSON), `tokenizer` (the [`Tokenizer`] as JSON), `step`, and `optim_t` (AdamW's step count) with optimizer state.
//!
//! [`load`] is strict: it checks the container, the metadata, the config (with [`Config::validate`]), the tokenizer,
//! and then every tensor's presence, name, dtype, shape and values against the layout the config implies, and only
//! when all of that holds does it build the model. Every refusal is an [`Error::Checkpoint`] naming what is wrong;
//! no input makes it panic, and nothing is ever half-loaded.

use crate::config::{Arch, Config};
use crate::data::{Tokenizer, MAX_CHARS};
use crate::error::{Error, Result};
use crate::model::{Layout, Model, TensorInfo};
use crate::train::OptState;
use safetensors::tensor::{SafeTensorError, TensorView};
use safetensors::{Dtype, SafeTensors};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

/// The value of the `format` metadata key.
pub const FORMAT: &str = "transformer-playground";
/// The value of the `format_version` metadata key written by this build (and the only one it reads).
pub const FORMAT_VERSION: &str = "1";
/// Prefixes of the optional AdamW moment tensors.
pub const OPTIM_M: &str = "optim.m.";
pub const OPTIM_V: &str = "optim.v.";

/// Most special tokens a tokenizer may have (with `MAX_CHARS`, this bounds the vocabulary a file can claim).
/// Span corruption at ctx_len 8192 has 455 spans: 456 sentinels and [BOS].
const MAX_SPECIALS: usize = 1024;

/// Everything a checkpoint holds, fully validated.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub config: Config,
    pub tokenizer: Tokenizer,
    pub step: usize,
    pub model: Model,
    /// AdamW moments, laid out like `model.params`, when the checkpoint carries them.
    pub opt: Option<OptState>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Checkpoint(msg.into())
}

// ---------------------------------------------------------------------------------------------------------------
// Saving

/// Serializes a model (and optionally its optimizer state) to safetensors bytes.
///
/// Refuses (with [`Error::Checkpoint`]) anything [`load`] would refuse: a config that does not validate or does not
/// describe `model`, a tokenizer whose vocabulary is not the model's, buffers of the wrong length, non-finite values.
pub fn save(cfg: &Config, tok: &Tokenizer, step: usize, model: &Model, opt: Option<&OptState>) -> Result<Vec<u8>> {
    cfg.validate().map_err(|e| bad(format!("cannot save: the config is invalid: {e}")))?;
    if cfg.model != model.cfg {
        return Err(bad("cannot save: the config's model section does not describe this model"));
    }
    check_tokenizer(tok, cfg).map_err(|e| bad(format!("cannot save: {e}")))?;
    if tok.vocab_size() != model.vocab() {
        return Err(bad(format!(
            "cannot save: the tokenizer has {} tokens but the model's vocabulary is {}",
            tok.vocab_size(),
            model.vocab()
        )));
    }
    // The layout the config implies (the one load checks against), not whatever the model struct carries.
    let layout = Layout::new(&cfg.model, model.vocab());
    let buffers: Vec<(&str, &[f32])> = match opt {
        Some(o) => vec![("", &model.params[..]), (OPTIM_M, &o.m[..]), (OPTIM_V, &o.v[..])],
        None => vec![("", &model.params[..])],
    };
    for (prefix, buf) in &buffers {
        if buf.len() != layout.size {
            let what = if prefix.is_empty() { "parameter".to_string() } else { format!("optimizer {prefix}*") };
            return Err(bad(format!(
                "cannot save: the {what} buffer holds {} floats but the layout needs {}",
                buf.len(),
                layout.size
            )));
        }
    }

    // Metadata, keys sorted, so that the same state always gives the same bytes.
    let json = |what: &str, r: serde_json::Result<String>| {
        r.map_err(|e| bad(format!("cannot save: {what} as JSON: {e}")))
    };
    let mut meta = BTreeMap::new();
    meta.insert("format", FORMAT.to_string());
    meta.insert("format_version", FORMAT_VERSION.to_string());
    meta.insert("config", json("config", serde_json::to_string(cfg))?);
    meta.insert("tokenizer", json("tokenizer", serde_json::to_string(tok))?);
    meta.insert("step", step.to_string());
    if let Some(o) = opt {
        meta.insert("optim_t", o.t.to_string());
    }

    // The header: metadata, then every tensor in layout order (parameters, then optim.m.*, then optim.v.*), each
    // right after the previous one in the data section.
    let mut header = format!("{{\"__metadata__\":{}", json("metadata", serde_json::to_string(&meta))?);
    let mut offset = 0usize;
    for (prefix, buf) in &buffers {
        for t in &layout.tensors {
            let name = format!("{prefix}{}", t.name);
            if let Some((i, x)) = t.view.of(buf).iter().enumerate().find(|(_, x)| !x.is_finite()) {
                return Err(bad(format!("cannot save: tensor {name} holds a non-finite value ({x} at element {i})")));
            }
            let shape = t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
            let end = offset + 4 * t.view.len;
            header += &format!(
                ",{}:{{\"dtype\":\"F32\",\"shape\":[{shape}],\"data_offsets\":[{offset},{end}]}}",
                json("tensor name", serde_json::to_string(&name))?
            );
            offset = end;
        }
    }
    header.push('}');
    // Pad with spaces so that the data starts 8-byte aligned (as the safetensors writers do).
    while header.len() % 8 != 0 {
        header.push(' ');
    }

    let mut out = Vec::with_capacity(8 + header.len() + offset);
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for (_, buf) in &buffers {
        for t in &layout.tensors {
            for x in t.view.of(buf) {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------------
// Loading

/// Reads and validates a checkpoint written by [`save`] (or by any tool following docs/CHECKPOINT.md).
///
/// The checks run in this order, and the first that fails is reported: the safetensors container; our metadata
/// and its version; the config; the tokenizer and the step; the vocabulary against `wte`; the model's size with
/// that vocabulary; the optimizer state being all there or absent; every tensor name (missing, then unexpected);
/// each tensor's dtype, shape and values.
pub fn load(bytes: &[u8]) -> Result<Checkpoint> {
    if let Some(what) = repeated_name(bytes) {
        return Err(bad(format!(
            "corrupt safetensors header: {what} is listed twice (a reader would silently keep only the last entry)"
        )));
    }
    let st = SafeTensors::deserialize(bytes).map_err(|e| container_error(bytes, e))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| container_error(bytes, e))?;
    let tensors: HashMap<String, TensorView> = st.tensors().into_iter().collect();
    let meta = header.metadata().clone().unwrap_or_default();

    check_ours(&meta, &tensors)?;
    let (config, tokenizer, step) = read_metadata(&meta)?;
    let vocab = tokenizer.vocab_size();
    if let Some([rows, _]) = tensors.get("wte").map(|t| t.shape()) {
        if *rows != vocab {
            return Err(bad(format!("vocabulary mismatch: the tokenizer has {vocab} tokens but wte has {rows} rows")));
        }
    }
    Layout::check_size(&config.model, vocab).map_err(|e| bad(format!("the config in the metadata is invalid: {e}")))?;
    let layout = Layout::new(&config.model, vocab);
    let optim_t = read_optim_t(&meta, &tensors)?;
    let prefixes: &[&str] = if optim_t.is_some() { &["", OPTIM_M, OPTIM_V] } else { &[""] };
    let expected: Vec<(String, &TensorInfo)> =
        prefixes.iter().flat_map(|p| layout.tensors.iter().map(move |t| (format!("{p}{}", t.name), t))).collect();
    check_names(&expected, &tensors, layout.tensors.len())?;
    let mut checked = Vec::with_capacity(expected.len());
    for (name, info) in &expected {
        let Some(t) = tensors.get(name) else { return Err(bad(format!("missing tensor {name}"))) };
        check_tensor(name, info, t)?;
        checked.push((name.as_str(), info.view, t.data()));
    }

    // Everything checks out: build.
    let mut model = Model::new(&config.model, vocab, 0);
    let mut opt = optim_t.map(|t| OptState { t, ..OptState::new(model.params.len()) });
    for (name, view, data) in checked {
        let buf = match (name.strip_prefix(OPTIM_M), name.strip_prefix(OPTIM_V), opt.as_mut()) {
            (Some(_), _, Some(o)) => &mut o.m,
            (_, Some(_), Some(o)) => &mut o.v,
            _ => &mut model.params,
        };
        let Some(dst) = buf.get_mut(view.offset..view.offset + view.len) else {
            return Err(bad(format!("tensor {name} does not fit the model's parameter buffer")));
        };
        dst.iter_mut().zip(floats(data)).for_each(|(d, x)| *d = x);
    }
    Ok(Checkpoint { config, tokenizer, step, model, opt })
}

/// Our `format`, in the one `format_version` this build reads.
fn check_ours(meta: &HashMap<String, String>, tensors: &HashMap<String, TensorView>) -> Result<()> {
    match meta.get("format").map(String::as_str) {
        Some(FORMAT) => {}
        other => {
            let found = match other {
                Some(f) => format!("its metadata \"format\" is {f:?}"),
                None if meta.is_empty() => "it has no metadata".to_string(),
                None => format!("its metadata has no \"format\" key, only the keys {}", list(sorted(meta.keys()), 8)),
            };
            return Err(bad(format!(
                "not a transformer-playground checkpoint: it lacks transformer-playground metadata ({found}); \
                 it holds {} tensor{} ({}); docs/CHECKPOINT.md describes the format",
                tensors.len(),
                if tensors.len() == 1 { "" } else { "s" },
                list(sorted(tensors.keys()), 3)
            )));
        }
    }
    match meta.get("format_version").map(String::as_str) {
        Some(FORMAT_VERSION) => Ok(()),
        Some(v) => Err(bad(format!("unsupported format_version {v:?}: this build reads version {FORMAT_VERSION:?}"))),
        None => Err(bad("metadata lacks \"format_version\"")),
    }
}

/// The config (validated), the tokenizer (checked against the architecture) and the step.
fn read_metadata(meta: &HashMap<String, String>) -> Result<(Config, Tokenizer, usize)> {
    let get = |key: &str, what: &str| {
        meta.get(key).map(String::as_str).ok_or_else(|| bad(format!("metadata lacks \"{key}\"{what}")))
    };
    let config = Config::from_json(get("config", " (the model config as JSON)")?)
        .map_err(|e| bad(format!("the config in the metadata is invalid: {e}")))?;
    let tokenizer = read_tokenizer(get("tokenizer", " (the tokenizer as JSON)")?, &config)?;
    let step = get("step", "")?;
    let step = step.parse().map_err(|_| bad(format!("metadata \"step\" = {step:?} is not a non-negative integer")))?;
    Ok((config, tokenizer, step))
}

/// A checkpoint's tokenizer from its metadata JSON (`{"chars": [...], "specials": [...]}`), checked against the
/// model's config as loading checks it.
pub fn read_tokenizer(json: &str, config: &Config) -> Result<Tokenizer> {
    let tokenizer: Tokenizer = serde_json::from_str(json)
        .map_err(|e| bad(format!("the tokenizer in the metadata is not valid tokenizer JSON: {e}")))?;
    check_tokenizer(&tokenizer, config)?;
    Ok(tokenizer)
}

/// AdamW's step count when the file carries optimizer tensors; `optim_t` and `optim.*` tensors come together.
fn read_optim_t(meta: &HashMap<String, String>, tensors: &HashMap<String, TensorView>) -> Result<Option<u32>> {
    let has_tensors = tensors.keys().any(|k| k.starts_with("optim."));
    match (has_tensors, meta.get("optim_t")) {
        (true, Some(t)) => {
            t.parse().map(Some).map_err(|_| bad(format!("metadata \"optim_t\" = {t:?} is not a step count")))
        }
        (true, None) => Err(bad("the checkpoint has optimizer tensors but its metadata lacks \"optim_t\"")),
        (false, Some(_)) => {
            Err(bad("metadata has \"optim_t\" but the checkpoint has no optimizer tensors (optim.m.*, optim.v.*)"))
        }
        (false, None) => Ok(None),
    }
}

/// Every expected name present, no other. `n_params`: parameter tensors the config implies.
fn check_names(
    expected: &[(String, &TensorInfo)],
    tensors: &HashMap<String, TensorView>,
    n_params: usize,
) -> Result<()> {
    let missing: Vec<&String> = expected.iter().map(|(n, _)| n).filter(|n| !tensors.contains_key(*n)).collect();
    let (missing_optim, missing_params): (Vec<&String>, Vec<&String>) =
        missing.into_iter().partition(|n| n.starts_with("optim."));
    if !missing_params.is_empty() {
        return Err(bad(format!(
            "missing tensor{} {} (the config expects {n_params} parameter tensors)",
            if missing_params.len() > 1 { "s" } else { "" },
            list(missing_params, 5)
        )));
    }
    if !missing_optim.is_empty() {
        return Err(bad(format!(
            "optimizer state is partial: {} of {} optim.* tensors present; missing {}",
            tensors.keys().filter(|k| k.starts_with("optim.")).count(),
            2 * n_params,
            list(missing_optim, 5)
        )));
    }
    let known: BTreeSet<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    let extra: Vec<&String> = sorted(tensors.keys()).into_iter().filter(|n| !known.contains(n.as_str())).collect();
    if !extra.is_empty() {
        return Err(bad(format!(
            "unexpected tensor{} {}: not part of the model the config describes",
            if extra.len() > 1 { "s" } else { "" },
            list(extra, 5)
        )));
    }
    Ok(())
}

/// F32, the documented shape, finite values (and non-negative ones for Adam's second moment).
fn check_tensor(name: &str, info: &TensorInfo, t: &TensorView) -> Result<()> {
    if t.dtype() != Dtype::F32 {
        return Err(bad(format!("tensor {name} has dtype {:?}; expected F32", t.dtype())));
    }
    if t.shape() != info.shape.as_slice() {
        return Err(bad(format!("tensor {name} has shape {:?}; expected {:?}", t.shape(), info.shape)));
    }
    let second_moment = name.starts_with(OPTIM_V);
    for (i, x) in floats(t.data()).enumerate() {
        if !x.is_finite() {
            return Err(bad(format!("tensor {name} holds a non-finite value ({x} at element {i})")));
        }
        if second_moment && x < 0.0 {
            return Err(bad(format!(
                "tensor {name} holds a negative value ({x} at element {i}); Adam's second moment is never negative"
            )));
        }
    }
    Ok(())
}

/// A tokenizer we can use: a non-empty vocabulary of sorted, distinct characters (encode binary-searches them),
/// and exactly the special tokens the architecture and task have ([`Tokenizer::specials_for_config`]: the
/// architecture's, then [MASK] for text infilling or the sentinels for span corruption), each once.
fn check_tokenizer(tok: &Tokenizer, cfg: &Config) -> Result<()> {
    let arch = cfg.model.arch;
    if tok.vocab_size() == 0 {
        return Err(bad("the tokenizer has an empty vocabulary"));
    }
    if tok.chars.len() > MAX_CHARS {
        return Err(bad(format!("the tokenizer has {} characters; at most {MAX_CHARS} are allowed", tok.chars.len())));
    }
    if let Some(w) = tok.chars.windows(2).find(|w| w[0] >= w[1]) {
        return Err(bad(format!(
            "the tokenizer's characters are not sorted and distinct ({:?} comes before {:?})",
            w[0], w[1]
        )));
    }
    if tok.specials.len() > MAX_SPECIALS {
        let n = tok.specials.len();
        return Err(bad(format!("the tokenizer has {n} special tokens; at most {MAX_SPECIALS} are allowed")));
    }
    let mut seen = BTreeSet::new();
    for s in &tok.specials {
        if s.is_empty() {
            return Err(bad("the tokenizer has an empty special token"));
        }
        if !seen.insert(s.as_str()) {
            return Err(bad(format!("the tokenizer lists the special token {s:?} twice")));
        }
    }
    let want = Tokenizer::specials_for_config(cfg);
    let model = match arch {
        Arch::Bert => "a bert".to_string(),
        Arch::EncoderDecoder if cfg.data.task.is_denoising() => {
            format!("an encoder_decoder with data.task = {} and model.ctx_len = {}", cfg.data.task.name(), cfg.model.ctx_len)
        }
        Arch::EncoderDecoder => "an encoder_decoder".to_string(),
        Arch::Gpt => "a gpt".to_string(),
    };
    if let Some(token) = want.iter().find(|t| tok.special(t).is_none()) {
        return Err(bad(format!("the tokenizer lacks the {token} token that {model} model needs")));
    }
    // A special the architecture never uses would be a vocabulary row no batch trains and fill-mask or decoding
    // could still meet, so the specials are exactly the architecture's.
    if let Some(extra) = tok.specials.iter().find(|s| !want.contains(s)) {
        let exactly =
            if want.is_empty() { "no special tokens".to_string() } else { format!("exactly {}", want.join(", ")) };
        return Err(bad(format!(
            "the tokenizer has the special token {extra:?}, which {model} model does not use ({model} tokenizer has \
             {exactly})"
        )));
    }
    Ok(())
}

/// Little-endian f32s of a byte slice (any alignment).
fn floats(data: &[u8]) -> impl Iterator<Item = f32> + '_ {
    data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn sorted<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut v: Vec<&String> = keys.collect();
    v.sort();
    v
}

/// "a, b, c and 4 more"
fn list(items: Vec<&String>, max: usize) -> String {
    if items.is_empty() {
        return "none".into();
    }
    let mut s = items.iter().take(max).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    if items.len() > max {
        s += &format!(" and {} more", items.len() - max);
    }
    s
}

/// Explains why the bytes are not a readable safetensors file.
fn container_error(bytes: &[u8], e: SafeTensorError) -> Error {
    let len = bytes.len();
    let declared = bytes.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes);
    let culprit = match e {
        SafeTensorError::InvalidOffset(_)
        | SafeTensorError::TensorInvalidInfo
        | SafeTensorError::ValidationOverflow => offsets_culprit(bytes),
        _ => None,
    };
    let msg = match e {
        _ if len == 0 => "the file is empty (0 bytes); a checkpoint is a safetensors file".to_string(),
        SafeTensorError::HeaderTooSmall => format!(
            "truncated or not a safetensors file: {len} byte{}, fewer than the 8-byte header length that starts one",
            if len == 1 { "" } else { "s" }
        ),
        SafeTensorError::HeaderTooLarge => format!(
            "not a safetensors file: its first 8 bytes declare a {}-byte header, over the 100 MB limit",
            declared.unwrap_or(0)
        ),
        SafeTensorError::InvalidHeaderLength => format!(
            "truncated or not a safetensors file: the header length is {} bytes but only {} bytes follow it",
            declared.unwrap_or(0),
            len.saturating_sub(8)
        ),
        SafeTensorError::InvalidHeader(_) => "not a safetensors file: its header is not UTF-8 text".to_string(),
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            format!("not a safetensors file: its header is not valid safetensors JSON ({e})")
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            let have = len.saturating_sub(8 + declared.unwrap_or(0) as usize);
            match data_extent(bytes) {
                Some(need) if need > have => format!(
                    "truncated: the header describes {need} bytes of tensor data but only {have} bytes follow it \
                     (data offsets run beyond the end of the file)"
                ),
                Some(need) => format!(
                    "corrupt safetensors file: the header describes {need} bytes of tensor data but {have} bytes \
                     follow it ({} trailing bytes)",
                    have - need
                ),
                None => "truncated or corrupt: the tensor data does not match the header".to_string(),
            }
        }
        // The crate names the tensor where the tiling of the data breaks in offset order (often the one after the
        // corrupted entry) or none, so the header is read again for the entry that is wrong.
        SafeTensorError::InvalidOffset(_)
        | SafeTensorError::TensorInvalidInfo
        | SafeTensorError::ValidationOverflow
            if culprit.is_some() =>
        {
            format!("corrupt safetensors header: {}", culprit.unwrap_or_default())
        }
        SafeTensorError::InvalidOffset(name) => format!(
            "corrupt safetensors header: the data offsets of tensor {name} overlap or leave a gap"
        ),
        SafeTensorError::TensorInvalidInfo => {
            "corrupt safetensors header: a tensor's data offsets do not match its shape and dtype".to_string()
        }
        SafeTensorError::ValidationOverflow => "corrupt safetensors header: a tensor's shape overflows".to_string(),
        SafeTensorError::MisalignedSlice => {
            "corrupt safetensors header: a sub-byte tensor is not byte aligned".to_string()
        }
        other => format!("not a readable safetensors file: {other:?}"),
    };
    bad(msg)
}

/// The header's bytes, when the file is long enough to hold the length it declares.
fn raw_header(bytes: &[u8]) -> Option<&[u8]> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    bytes.get(8..8usize.checked_add(n)?)
}

/// What is wrong with the header's data offsets, naming the tensor: the first entry (by name) whose offsets run
/// backwards or span other than the bytes of its shape and dtype; else, in the order of the data, the first that
/// does not start where the one before it ends. `None` when the header is not readable as tensor entries.
fn offsets_culprit(bytes: &[u8]) -> Option<String> {
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(raw_header(bytes)?).ok()?;
    let mut spans = Vec::with_capacity(header.len());
    for (name, entry) in header.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let info: safetensors::tensor::TensorInfo = serde_json::from_value(entry.clone()).ok()?;
        let (start, end) = info.data_offsets;
        if end < start {
            return Some(format!("the data offsets of tensor {name} run backwards ([{start}, {end}])"));
        }
        let elements = info.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        let size = elements.and_then(|n| n.checked_mul(info.dtype.bitsize())).map(|bits| bits.div_ceil(8));
        if size != Some(end - start) {
            let size = size.map_or("more than fits in memory".to_string(), |b| format!("{b} bytes"));
            return Some(format!(
                "the data offsets of tensor {name} ([{start}, {end}]: {} bytes) do not match its shape {:?} and \
                 dtype {:?} ({size})",
                end - start,
                info.shape,
                info.dtype
            ));
        }
        spans.push((start, end, name));
    }
    spans.sort();
    let mut prev: Option<(usize, &String)> = None;
    for (start, end, name) in spans {
        let (prev_end, after) = match prev {
            Some((e, p)) => (e, format!("where tensor {p} ends")),
            None => (0, "where the data begins".to_string()),
        };
        if start != prev_end {
            return Some(format!(
                "the data offsets of tensor {name} overlap or leave a gap: it starts at byte {start}, {after} at \
                 byte {prev_end}"
            ));
        }
        prev = Some((end, name));
    }
    None
}

/// The end of the tensor data that a (well-formed JSON) header describes, from the largest `data_offsets` end.
fn data_extent(bytes: &[u8]) -> Option<usize> {
    let v: serde_json::Value = serde_json::from_slice(raw_header(bytes)?).ok()?;
    v.as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .filter_map(|(_, t)| t.get("data_offsets")?.get(1)?.as_u64())
        .map(|e| usize::try_from(e).ok())
        .try_fold(0usize, |m, e| e.map(|e| m.max(e)))
}

/// The first name the header lists twice: a tensor ("tensor wte") or a metadata key ("metadata key \"step\""). JSON
/// parsers, the safetensors crate's included, keep the last entry of a repeated key and drop the others silently, so
/// this reads the raw header. `None` also when the header is not JSON (the container check says why).
fn repeated_name(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<RepeatedKey>(raw_header(bytes)?).ok()?.0
}

/// The first key a JSON object repeats, read without building the object. The header's `__metadata__` object is
/// checked the same way, one level down; other values are skipped.
struct RepeatedKey(Option<String>);

impl<'de> Deserialize<'de> for RepeatedKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(KeysVisitor { top: true })
    }
}

struct KeysVisitor {
    /// The header itself (its keys are tensor names), not its metadata.
    top: bool,
}

impl<'de> Visitor<'de> for KeysVisitor {
    type Value = RepeatedKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    /// No metadata (`"__metadata__": null`).
    fn visit_unit<E>(self) -> std::result::Result<RepeatedKey, E> {
        Ok(RepeatedKey(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<RepeatedKey, A::Error> {
        let mut seen = HashSet::new();
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let inner = if self.top && key == "__metadata__" {
                map.next_value_seed(KeysVisitor { top: false })?.0
            } else {
                map.next_value::<IgnoredAny>().map(|_| None)?
            };
            let what = || match (self.top, key.as_str()) {
                (true, "__metadata__") => "the metadata".to_string(),
                (true, name) => format!("tensor {name}"),
                (false, k) => format!("metadata key {k:?}"),
            };
            if found.is_none() {
                found = if seen.contains(&key) { Some(what()) } else { inner };
            }
            seen.insert(key);
        }
        Ok(RepeatedKey(found))
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for KeysVisitor {
    type Value = RepeatedKey;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<RepeatedKey, D::Error> {
        d.deserialize_any(self)
    }
}

//! The device: instance → adapter → device and queue, with the adapter's limits requested and kept for checks,
//! subgroup operations requested where the adapter offers them, and every error the device reports asynchronously
//! (validation outside a scope, device loss) recorded instead of wgpu's default of panicking, then returned by the
//! next `take_error`.

use super::gpu_error;
use crate::error::Result;
use std::sync::{Arc, Mutex};

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    /// The adapter's limits, all requested for the device.
    pub limits: wgpu::Limits,
    /// Whether the device has subgroup operations (`wgpu::Features::SUBGROUP`), requested wherever the adapter
    /// offers them: natively, on Vulkan drivers with subgroup arithmetic (lavapipe among them); never in the
    /// browser, where wgpu's WebGPU backend maps no subgroup feature. The reductions use them (`Gpu::reducing`).
    pub subgroups: bool,
    /// The first error reported since the last `take_error`.
    error: Arc<Mutex<Option<String>>>,
    /// Why the device was lost, once it is: every later `take_error` reports it.
    lost: Arc<Mutex<Option<String>>>,
}

/// Said when there is no adapter at all.
const NO_ADAPTER: &str = "no GPU adapter found. Natively wgpu needs a Vulkan driver: on Debian/Ubuntu \
`apt-get install mesa-vulkan-drivers libvulkan1` provides the software adapter llvmpipe (lavapipe); \
in a browser, WebGPU must be available (headless Chromium needs --enable-unsafe-webgpu)";

impl GpuContext {
    pub async fn new() -> Result<GpuContext> {
        GpuContext::with_limits(None).await
    }

    /// A device with `limits` requested instead of the adapter's own (`wgpu::Limits::default()`: WebGPU's default
    /// limits, what a page gets on a device asked for nothing more — maxStorageBufferBindingSize 128 MiB,
    /// maxBufferSize 256 MiB, 65535 workgroups per dimension). The device and the backend's own checks
    /// (`check_binding`, `check_buffer_size`, `check_grid`) then hold every buffer and dispatch to them. Refused
    /// when the adapter cannot give them.
    pub async fn with_limits(limits: Option<wgpu::Limits>) -> Result<GpuContext> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        };
        let adapter = instance.request_adapter(&options).await.map_err(|e| gpu_error(format!("{NO_ADAPTER} ({e})")))?;
        let limits = limits.unwrap_or_else(|| adapter.limits());
        let features = adapter.features() & wgpu::Features::SUBGROUP;
        let desc = wgpu::DeviceDescriptor {
            label: Some("transformer-playground"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        };
        let (device, queue) =
            adapter.request_device(&desc).await.map_err(|e| gpu_error(format!("the adapter refused a device: {e}")))?;
        let error = Arc::new(Mutex::new(None));
        let slot = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| record(&slot, e.to_string())));
        let lost = Arc::new(Mutex::new(None));
        let slot = lost.clone();
        device.set_device_lost_callback(move |reason, msg| record(&slot, format!("device lost ({reason:?}): {msg}")));
        let subgroups = device.features().contains(wgpu::Features::SUBGROUP);
        Ok(GpuContext { device, queue, info: adapter.get_info(), limits, subgroups, error, lost })
    }

    /// The first device error since the last call, as an `Error`; once the device is lost, always that.
    pub fn take_error(&self) -> Result<()> {
        self.check_lost()?;
        match self.error.lock().unwrap_or_else(|e| e.into_inner()).take() {
            Some(msg) => Err(gpu_error(msg)),
            None => Ok(()),
        }
    }

    /// An error once the device is lost (destroyed, reset by the driver, …): nothing recorded on it runs.
    pub fn check_lost(&self) -> Result<()> {
        match self.lost.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(msg) => Err(gpu_error(msg)),
            None => Ok(()),
        }
    }

    /// Compiles WGSL and makes its pipeline inside validation and internal error scopes, so a shader that does not
    /// compile, or does not match its bind group layout, is an error naming the kernel.
    pub(crate) async fn compile(
        &self,
        label: &str,
        src: &str,
        entry: &str,
        layout: Option<&wgpu::BindGroupLayout>,
    ) -> Result<wgpu::ComputePipeline> {
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let module = self.device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pl = layout.map(|l| {
            self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(label),
                bind_group_layouts: &[Some(l)],
                immediate_size: 0,
            })
        });
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: pl.as_ref(),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        let internal = internal.pop().await;
        let validation = validation.pop().await;
        match internal.or(validation) {
            Some(e) => Err(gpu_error(format!("kernel {label} failed to compile: {e}"))),
            None => Ok(pipeline),
        }
    }

    /// Compiles a WGSL compute shader (entry point `main`, layout from the shader) and reports whether it
    /// compiled: Ok, or an error naming `label` with the compiler's message.
    pub async fn check_wgsl(&self, label: &str, src: &str) -> Result<()> {
        self.compile(label, src, "main", None).await.map(|_| ())
    }

    /// A storage binding must start at a multiple of minStorageBufferOffsetAlignment and fit
    /// maxStorageBufferBindingSize.
    pub(crate) fn check_binding(&self, kernel: &str, binding: usize, offset: u64, size: u64) -> Result<()> {
        let align = self.limits.min_storage_buffer_offset_alignment as u64;
        if !offset.is_multiple_of(align) {
            return Err(gpu_error(format!(
                "{kernel}: binding {binding} starts at byte {offset}, not a multiple of the adapter's \
                 minStorageBufferOffsetAlignment ({align}); views into a buffer must start on {} elements",
                align / 4
            )));
        }
        let max = self.limits.max_storage_buffer_binding_size;
        if size > max {
            return Err(gpu_error(format!(
                "{kernel}: binding {binding} is {size} bytes, over the adapter's maxStorageBufferBindingSize ({max} bytes); \
                 use a smaller batch or model"
            )));
        }
        Ok(())
    }

    /// Refuses a dispatch of more workgroups in a dimension than maxComputeWorkgroupsPerDimension (a kernel with
    /// more than that many workgroups spreads them over a grid: `Gpu::grid`).
    pub(crate) fn check_grid(&self, kernel: &str, groups: [u32; 3]) -> Result<()> {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > max) {
            return Err(gpu_error(format!(
                "{kernel}: a dispatch of {groups:?} workgroups is over the adapter's maxComputeWorkgroupsPerDimension ({max}); \
                 use a smaller batch or model"
            )));
        }
        Ok(())
    }

    /// Refuses a buffer larger than maxBufferSize.
    pub(crate) fn check_buffer_size(&self, bytes: u64) -> Result<()> {
        if bytes > self.limits.max_buffer_size {
            return Err(gpu_error(format!(
                "a buffer of {bytes} bytes is over the adapter's maxBufferSize ({} bytes)",
                self.limits.max_buffer_size
            )));
        }
        Ok(())
    }
}

fn record(slot: &Mutex<Option<String>>, msg: String) {
    let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
    if s.is_none() {
        *s = Some(msg);
    }
}

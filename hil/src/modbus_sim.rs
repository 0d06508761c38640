//! A Modbus TCP server presenting simulated SunSpec devices (one per unit id), with fault
//! injection, on tokio-modbus's server (the shape of its `examples/tcp-server.rs`).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::tcp::Server;
use tokio_modbus::server::Service;

use crate::devices::SimDevice;
use crate::faults::{Dice, FaultPlan, FaultyStream};

/// Devices by unit id, shared between the server and whoever drives the scenario.
pub type SharedDevices = Arc<Mutex<BTreeMap<u8, SimDevice>>>;

#[derive(Clone)]
struct SimService {
    /// On an RTU bus, a unit that is not there stays silent instead of raising an exception.
    rtu: bool,
    devices: SharedDevices,
    plan: FaultPlan,
    dice: Arc<Dice>,
}

type SimFuture = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

impl SimService {
    fn present(&self, unit: u8) -> bool {
        self.devices
            .lock()
            .map(|d| d.contains_key(&unit))
            .unwrap_or(false)
    }

    fn answer(&self, req: SlaveRequest<'_>) -> Result<Response, ExceptionCode> {
        let mut devices = self
            .devices
            .lock()
            .map_err(|_| ExceptionCode::ServerDeviceFailure)?;
        let single = devices.len() == 1;
        let unit = req.slave;
        let device = match devices.get_mut(&unit) {
            Some(d) => d,
            // A lone device answers any unit id, as most TCP devices do.
            None if single => devices
                .values_mut()
                .next()
                .ok_or(ExceptionCode::GatewayTargetDevice)?,
            None => return Err(ExceptionCode::GatewayTargetDevice),
        };
        if let Some(answer) = signing_block(device, &req.request) {
            return answer;
        }
        match req.request {
            Request::ReadHoldingRegisters(addr, count)
            | Request::ReadInputRegisters(addr, count) => {
                if count == 0 || count > 125 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                device
                    .image
                    .read(addr, count)
                    .map(|w| Response::ReadHoldingRegisters(w.to_vec()))
                    .ok_or(ExceptionCode::IllegalDataAddress)
            }
            Request::WriteMultipleRegisters(addr, words) => {
                if words.len() > 123 {
                    return Err(ExceptionCode::IllegalDataValue);
                }
                if device.image.write(addr, &words) {
                    device.step(0);
                    Ok(Response::WriteMultipleRegisters(addr, words.len() as u16))
                } else {
                    Err(ExceptionCode::IllegalDataAddress)
                }
            }
            Request::WriteSingleRegister(addr, word) => {
                if device.image.write(addr, &[word]) {
                    device.step(0);
                    Ok(Response::WriteSingleRegister(addr, word))
                } else {
                    Err(ExceptionCode::IllegalDataAddress)
                }
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }
}

/// A request for the signing block of a battery that holds its home's key; `None` when the
/// request is for the SunSpec image.
fn signing_block(
    device: &mut SimDevice,
    request: &Request<'_>,
) -> Option<Result<Response, ExceptionCode>> {
    use gridlet_drivers::signer::{BASE, LEN};
    let in_block = |addr: u16| (BASE..BASE.saturating_add(LEN)).contains(&addr);
    let battery = match &device.model {
        crate::devices::DeviceModel::Battery(b) => b,
        _ => return None,
    };
    let signer = device.signer.as_mut()?;
    Some(match request {
        Request::ReadHoldingRegisters(addr, count) | Request::ReadInputRegisters(addr, count)
            if in_block(*addr) =>
        {
            signer
                .read(addr - BASE, *count)
                .map(Response::ReadHoldingRegisters)
                .ok_or(ExceptionCode::IllegalDataAddress)
        }
        Request::WriteMultipleRegisters(addr, words) if in_block(*addr) => {
            if signer.write(addr - BASE, words, battery) {
                Ok(Response::WriteMultipleRegisters(*addr, words.len() as u16))
            } else {
                Err(ExceptionCode::IllegalDataAddress)
            }
        }
        _ => return None,
    })
}

impl Service for SimService {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = SimFuture;

    fn call(&self, req: Self::Request) -> Self::Future {
        if self.rtu && !self.present(req.slave) {
            return Box::pin(std::future::ready(Ok(None)));
        }
        if self.plan.exception_percent > 0 && self.dice.percent() < self.plan.exception_percent {
            return Box::pin(std::future::ready(Err(ExceptionCode::ServerDeviceFailure)));
        }
        let late = self.plan.late_percent > 0 && self.dice.percent() < self.plan.late_percent;
        let result = self.answer(req).map(Some);
        if late {
            let delay = Duration::from_millis(self.plan.late_by_ms);
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                result
            })
        } else {
            Box::pin(std::future::ready(result))
        }
    }
}

/// A running simulator.
#[derive(Debug)]
pub struct ModbusSim {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its devices (step them, read their state).
    pub devices: SharedDevices,
    frozen: bool,
    task: JoinHandle<()>,
}

impl ModbusSim {
    /// Starts serving `devices` on `listen` (port 0 picks a free port).
    pub async fn start(
        listen: SocketAddr,
        devices: BTreeMap<u8, SimDevice>,
        plan: FaultPlan,
    ) -> std::io::Result<ModbusSim> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let devices: SharedDevices = Arc::new(Mutex::new(devices));
        let service = SimService {
            rtu: false,
            devices: devices.clone(),
            plan: plan.clone(),
            dice: Arc::new(Dice::new(plan.seed)),
        };
        let server = Server::new(listener);
        let task = tokio::spawn(async move {
            let on_connected = |stream, _peer| {
                let service = service.clone();
                async move {
                    let faulty =
                        FaultyStream::new(stream, service.plan.clone(), service.dice.clone());
                    Ok(Some((service, faulty)))
                }
            };
            if let Err(e) = server
                .serve(
                    &on_connected,
                    |e| tracing::debug!(%e, "simulator connection ended"),
                )
                .await
            {
                tracing::warn!(%e, "simulator stopped");
            }
        });
        Ok(ModbusSim {
            addr,
            devices,
            frozen: plan.frozen,
            task,
        })
    }

    /// Advances every device by `dt_ms` of scenario time.
    pub fn step(&self, dt_ms: u64) {
        if self.frozen {
            return;
        }
        if let Ok(mut d) = self.devices.lock() {
            for dev in d.values_mut() {
                dev.step(dt_ms);
            }
        }
    }

    /// Stops serving (open connections end with it).
    pub fn stop(&self) {
        self.task.abort();
    }
}

/// Device physics in real time on a sped-up scenario clock: every 5 ms, each device steps by
/// the real time that passed × `speedup` (stepping a fixed 5 ms let the devices fall behind
/// the gateway's clock on a loaded machine, where a 5 ms sleep takes longer), then `after`
/// sees it. Runs until dropped; spawn it on the test's runtime.
pub async fn run_physics(
    devices: SharedDevices,
    speedup: f64,
    mut after: impl FnMut(&mut SimDevice),
) {
    let mut last = std::time::Instant::now();
    let mut carry_ms = 0.0;
    loop {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = std::time::Instant::now();
        carry_ms += now.duration_since(last).as_secs_f64() * 1000.0 * speedup;
        last = now;
        let step = carry_ms.floor();
        carry_ms -= step;
        if let Ok(mut d) = devices.lock() {
            for dev in d.values_mut() {
                dev.step(step as u64);
                after(dev);
            }
        }
    }
}

impl Drop for ModbusSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A simulator on a serial line (Modbus RTU), e.g. one end of a socat pty pair.
#[derive(Debug)]
pub struct RtuSim {
    /// Its devices.
    pub devices: SharedDevices,
    task: JoinHandle<()>,
}

impl RtuSim {
    /// Starts serving `devices` on the serial device `path`.
    pub fn start(
        path: &str,
        baud: u32,
        devices: BTreeMap<u8, SimDevice>,
        plan: FaultPlan,
    ) -> std::io::Result<RtuSim> {
        let port = tokio_serial::SerialStream::open(&tokio_serial::new(path, baud))
            .map_err(std::io::Error::other)?;
        let devices: SharedDevices = Arc::new(Mutex::new(devices));
        let service = SimService {
            rtu: true,
            devices: devices.clone(),
            plan: plan.clone(),
            dice: Arc::new(Dice::new(plan.seed)),
        };
        let server = tokio_modbus::server::rtu::Server::new(port);
        let task = tokio::spawn(async move {
            if let Err(e) = server.serve_forever(service).await {
                tracing::warn!(%e, "RTU simulator stopped");
            }
        });
        Ok(RtuSim { devices, task })
    }
}

impl Drop for RtuSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! `baremetal-api-sim`: the upstream BareMetal images API simulator
//! ([`baremetal_api_sim`]) as a program, for the README try-it-out and benchmarks.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;

use baremetal_api_sim::{Simulator, DEMO_READY_AFTER, DEMO_TENANTS};
use clap::{Parser, ValueEnum};
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// Simulates the Yandex Cloud BareMetal images API (/baremetal/v1alpha/images over HTTP/1.1
/// and h2c, and the ImageService over gRPC on the same address), with demo data, request
/// counters and fault injection (control API under /_sim/).
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        value_name = "ADDR",
        env = "BAREMETAL_API_SIM_LISTEN",
        default_value = "127.0.0.1:9000"
    )]
    listen: SocketAddr,
    /// Start without the demo tokens and images.
    #[arg(long)]
    empty: bool,
    /// Log format (the filter comes from RUST_LOG, default "info").
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("baremetal-api-sim: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr; stdout carries only the start-up banner.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or journald.
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    // Install the handlers before serving, so an early signal is not lost.
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    };
    let sim = if args.empty {
        Simulator::new()
    } else {
        Simulator::demo()
    };
    println!("baremetal-api-sim listening on http://{addr} (REST, and gRPC over h2c)");
    if !args.empty {
        print_demo_data(addr);
    }
    sim.serve(listener, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}

fn print_demo_data(addr: SocketAddr) {
    let ready_after = humantime::format_duration(DEMO_READY_AFTER);
    println!("demo data (images created through the API turn READY after {ready_after}):");
    for tenant in DEMO_TENANTS {
        println!("  token {}  folder {}", tenant.token, tenant.folder_id);
        for image in tenant.images {
            println!(
                "    image {}  {:<8}  {}",
                image.id, image.status, image.name
            );
        }
    }
    if let Some((tenant, image)) = DEMO_TENANTS
        .first()
        .and_then(|tenant| Some((tenant, tenant.images.first()?)))
    {
        println!(
            "try: curl -H 'Authorization: Bearer {}' http://{addr}/baremetal/v1alpha/images/{}",
            tenant.token, image.id
        );
    }
}

mod args;
mod kernel;
mod print;
mod serve;
mod toolchain;
mod verbs;

use clap::Parser;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("BAKEOFF_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One sentence, like every other error; `--help` has the rest.
            let text = e.render().to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            eprintln!("bakeoff: {first} (see `bakeoff --help`)");
            std::process::exit(2);
        }
    };
    let code = match verbs::dispatch(cli.command).await {
        Ok(code) => code,
        Err(e) => {
            // One printer for the whole chain, each cause once.
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("bakeoff: {msg}");
            1
        }
    };
    std::process::exit(code);
}

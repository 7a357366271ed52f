//! Manifests and flags → ruleset: the part `dry-run` and `apply` share.

use kproxy_compiler::ir::Ruleset;
use kproxy_manifests::Input;

use super::config;
use crate::cli::InputArgs;
use crate::{hostname, input};

/// A compiled ruleset and what is needed to describe it.
pub struct Compiled {
    /// The ruleset for this node.
    pub ruleset: Ruleset,
    /// The node the rules are for.
    pub node_name: String,
    /// Service ports programmed.
    pub service_ports: usize,
    /// Problems with individual objects (skipped with `--keep-going`).
    pub problems: Vec<String>,
    /// The desired state the ruleset was compiled from.
    pub state: kproxy_model::ProxyState,
    /// The validated flags it was compiled with (iptables mode compiles the state again).
    pub options: kproxy_compiler::Options,
}

/// Why nothing was compiled; every message has already been printed.
pub struct NothingCompiled;

/// Loads the manifests and compiles them, printing each problem on stderr. Bad flags are
/// fatal even with `--keep-going`: every rule depends on them.
pub fn compile(args: &InputArgs) -> anyhow::Result<Result<Compiled, NothingCompiled>> {
    let options = match config::options(&args.proxy) {
        Ok(options) => options,
        Err(problems) => {
            for problem in &problems {
                eprintln!("error: {problem}");
            }
            return Ok(Err(NothingCompiled));
        }
    };
    let node_name = hostname::for_flags(&args.proxy)?;
    let inputs: Vec<Input> = args
        .files
        .iter()
        .map(|p| Input::parse(&p.to_string_lossy()))
        .collect();
    let (manifests, errors) = kproxy_manifests::load(&inputs);
    let mut problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let loaded = input::build(&manifests, &node_name);
    problems.extend(loaded.problems);

    for problem in &problems {
        eprintln!("error: {problem}");
    }
    if !problems.is_empty() && !args.keep_going {
        eprintln!("error: {} problem(s) in the input; nothing compiled (use --keep-going to compile the valid objects)", problems.len());
        return Ok(Err(NothingCompiled));
    }
    Ok(Ok(Compiled {
        ruleset: kproxy_compiler::compile(&loaded.state, &options),
        node_name,
        service_ports: loaded.state.ports.len(),
        problems,
        state: loaded.state,
        options,
    }))
}

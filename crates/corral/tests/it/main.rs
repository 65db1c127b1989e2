//! The black-box tests: the real `corral` binary, server and models. One test binary (a module
//! per area) so that the suite links once.

mod common;

mod backends;
mod bad_input;
mod browser;
mod cache;
mod clients;
mod conformance;
mod context;
mod devices;
mod embedding_models;
mod end_to_end;
mod import;
mod import_archs;
mod import_gemma;
mod import_pretokenizers;
mod infill;
mod logit_bias;
mod logprobs;
mod management;
mod metrics;
mod openai;
mod quantize;
mod registry;
mod repl;
mod rpc;
mod rpc_faults;
mod rpc_netns;
mod security;
mod speculation;
mod supervision;
mod tool_calls;
mod vulkan;

//! The binary finds llama.cpp's shared libraries and backend modules in the bundle that
//! `scripts/build.sh` makes: `bin/corral` beside `lib/corral/`.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN/../lib/corral");
    }
}

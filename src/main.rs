fn main() {
    std::process::exit(saferoot::cli::main());
}

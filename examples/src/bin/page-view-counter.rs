//! Job two of the page-view example: count page views per user (the task:
//! `samza_examples::page_view_counter`).

fn main() -> std::process::ExitCode {
    samza::main(samza_examples::page_view_counter::tasks())
}

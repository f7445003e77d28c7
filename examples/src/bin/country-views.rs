//! The join example: page views per country (the tasks:
//! `samza_examples::country_views`).

fn main() -> std::process::ExitCode {
    samza::main(samza_examples::country_views::tasks())
}

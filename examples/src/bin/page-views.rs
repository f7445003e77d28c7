//! Job one of the page-view example: repartition page views by user id
//! (the task: `samza_examples::page_views`).

fn main() -> std::process::ExitCode {
    samza::main(samza_examples::page_views::tasks())
}

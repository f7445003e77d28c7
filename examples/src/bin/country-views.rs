//! A join with a bootstrapped table, and a second job that sums partials:
//! page views per country.
//!
//! - `join` (job `country-join`): inputs are page views keyed by user
//!   (`page-views-by-user`) and user profiles keyed by user (`profiles`, JSON
//!   `{"user", "country"}`), co-partitioned. Profiles are a bootstrap input:
//!   every task reads its profile partition to the end before any page view,
//!   keeping the profiles in the store `profiles`, so a view never meets a
//!   missing profile for a user that has one. Each task counts its views per
//!   country in the store `partials` and, on each window, emits the
//!   partials that changed (`{"task", "country", "count"}`, keyed by country)
//!   to `params.output` (default `log.country-partials`).
//! - `sum` (job `country-sum`): keeps the latest partial of every task per
//!   country in the store `by-country` and, on each window, emits each changed
//!   country's total (the sum over tasks) to `params.output` (default
//!   `log.country-counts`, keyed by country). A partial is cumulative, so a
//!   replayed one changes nothing.
//!
//! Views of users without a profile count under the country `unknown`.

use std::collections::{BTreeMap, BTreeSet};

use samza::prelude::*;
use samza::{I64Serde, KeyValueStore};

#[derive(serde::Deserialize)]
struct Profile {
    country: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Partial {
    task: String,
    country: String,
    count: i64,
}

#[derive(Default)]
struct Join {
    profiles: Option<KeyValueStore<String, String>>,
    partials: Option<KeyValueStore<String, i64>>,
    profile_stream: String,
    task: String,
    output: Option<SystemStream>,
    changed: BTreeSet<String>,
}

impl StreamTask for Join {
    fn init(&mut self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.profiles = Some(ctx.store("profiles", StringSerde, StringSerde)?);
        self.partials = Some(ctx.store("partials", StringSerde, I64Serde)?);
        self.profile_stream = ctx.config().get("params.profiles").unwrap_or("profiles").to_string();
        self.task = ctx.task_name().as_str().to_string();
        self.output = Some(ctx.config().get_system_stream("params.output", "log.country-partials")?);
        Ok(())
    }

    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let user = env.key_str()?.ok_or_else(|| {
            TaskError::task(format!("message at {} offset {} has no user id key", env.ssp, env.offset))
        })?;
        if env.ssp.stream() == self.profile_stream {
            let profile: Profile = env.message_json()?;
            self.profiles.as_ref().expect("init ran").put(&user.to_string(), &profile.country)?;
            return Ok(());
        }
        let country = self
            .profiles
            .as_ref()
            .expect("init ran")
            .get(&user.to_string())?
            .unwrap_or_else(|| "unknown".into());
        self.partials.as_ref().expect("init ran").update(&country, |n| Some(n.unwrap_or(0) + 1))?;
        self.changed.insert(country);
        Ok(())
    }

    fn caught_up(&mut self, _: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        tracing_line(&format!("task {}: profiles loaded; joining page views", self.task));
        Ok(())
    }

    fn window(&mut self, out: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        let partials = self.partials.as_ref().expect("init ran");
        for country in std::mem::take(&mut self.changed) {
            let count = partials.get(&country)?.unwrap_or(0);
            let partial = Partial { task: self.task.clone(), country: country.clone(), count };
            let output = self.output.clone().expect("init ran");
            out.send(OutgoingMessageEnvelope::json(output, Some(&country), &partial)?);
        }
        Ok(())
    }
}

#[derive(Default)]
struct Sum {
    by_country: Option<KeyValueStore<String, BTreeMap<String, i64>>>,
    output: Option<SystemStream>,
    changed: BTreeSet<String>,
}

impl StreamTask for Sum {
    fn init(&mut self, ctx: &mut TaskContext) -> Result<(), TaskError> {
        self.by_country = Some(ctx.store("by-country", StringSerde, samza::JsonSerde)?);
        self.output = Some(ctx.config().get_system_stream("params.output", "log.country-counts")?);
        Ok(())
    }

    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let p: Partial = env.message_json()?;
        let store = self.by_country.as_ref().expect("init ran");
        let mut tasks = store.get(&p.country)?.unwrap_or_default();
        tasks.insert(p.task, p.count);
        store.put(&p.country, &tasks)?;
        self.changed.insert(p.country);
        Ok(())
    }

    fn window(&mut self, out: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        let store = self.by_country.as_ref().expect("init ran");
        for country in std::mem::take(&mut self.changed) {
            let total: i64 = store.get(&country)?.unwrap_or_default().values().sum();
            out.send(OutgoingMessageEnvelope::new(
                self.output.clone().expect("init ran"),
                Some(country.into_bytes().into()),
                Some(total.to_string().into_bytes().into()),
            ));
        }
        Ok(())
    }
}

/// A line in the container's log (stderr).
fn tracing_line(message: &str) {
    eprintln!("country-views: {message}");
}

fn main() -> std::process::ExitCode {
    samza::main(TaskRegistry::new().register::<Join>("join").register::<Sum>("sum"))
}

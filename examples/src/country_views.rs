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

/// Joins page views with the profile table; counts per country (see the module's docs).
pub struct Join {
    profiles: KeyValueStore<String, String>,
    partials: KeyValueStore<String, i64>,
    profile_stream: SystemStream,
    task: String,
    output: SystemStream,
    changed: BTreeSet<String>,
}

impl BuildTask for Join {
    fn build(ctx: &mut TaskContext) -> Result<Self, TaskError> {
        let profiles = ctx.config().get("params.profiles").unwrap_or("profiles").to_string();
        Ok(Join {
            profiles: ctx.store("profiles", StringSerde, StringSerde)?,
            partials: ctx.store("partials", StringSerde, I64Serde)?,
            profile_stream: ctx.input(&profiles)?,
            task: ctx.task_name().as_str().to_string(),
            output: ctx.config().get_system_stream("params.output", "log.country-partials")?,
            changed: BTreeSet::new(),
        })
    }
}

impl StreamTask for Join {
    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let user = env.key_str()?.ok_or_else(|| {
            TaskError::task(format!("message at {} offset {} has no user id key", env.ssp, env.offset))
        })?;
        if env.is_from(&self.profile_stream) {
            let profile: Profile = env.message_json()?;
            self.profiles.put(&user.to_string(), &profile.country)?;
            return Ok(());
        }
        let country = self.profiles.get(&user.to_string())?.unwrap_or_else(|| "unknown".into());
        self.partials.update(&country, |n| Some(n.unwrap_or(0) + 1))?;
        self.changed.insert(country);
        Ok(())
    }

    fn caught_up(&mut self, _: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        tracing_line(&format!("task {}: profiles loaded; joining page views", self.task));
        Ok(())
    }

    fn window(&mut self, out: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        for country in std::mem::take(&mut self.changed) {
            let count = self.partials.get(&country)?.unwrap_or(0);
            let partial = Partial { task: self.task.clone(), country: country.clone(), count };
            out.send(OutgoingMessageEnvelope::json(self.output.clone(), Some(&country), &partial)?);
        }
        Ok(())
    }
}

/// Sums the partials of every task per country (see the module's docs).
pub struct Sum {
    by_country: KeyValueStore<String, BTreeMap<String, i64>>,
    output: SystemStream,
    changed: BTreeSet<String>,
}

impl BuildTask for Sum {
    fn build(ctx: &mut TaskContext) -> Result<Self, TaskError> {
        Ok(Sum {
            by_country: ctx.store("by-country", StringSerde, JsonSerde)?,
            output: ctx.config().get_system_stream("params.output", "log.country-counts")?,
            changed: BTreeSet::new(),
        })
    }
}

impl StreamTask for Sum {
    fn process(
        &mut self,
        env: &IncomingMessageEnvelope,
        _: &mut MessageCollector,
        _: &mut TaskCoordinator,
    ) -> Result<(), TaskError> {
        let p: Partial = env.message_json()?;
        let mut tasks = self.by_country.get(&p.country)?.unwrap_or_default();
        tasks.insert(p.task, p.count);
        self.by_country.put(&p.country, &tasks)?;
        self.changed.insert(p.country);
        Ok(())
    }

    fn window(&mut self, out: &mut MessageCollector, _: &mut TaskCoordinator) -> Result<(), TaskError> {
        for country in std::mem::take(&mut self.changed) {
            let total: i64 = self.by_country.get(&country)?.unwrap_or_default().values().sum();
            out.send(OutgoingMessageEnvelope::new(
                self.output.clone(),
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

/// The jobs' tasks: `join` and `sum`.
pub fn tasks() -> TaskRegistry {
    TaskRegistry::new().register_built::<Join>("join").register_built::<Sum>("sum")
}

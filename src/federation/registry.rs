//! The primary's member registry: in memory on the leader, judged by a clock passed in.
//! A member is healthy while `now − last_seen ≤ 1.5 × interval`, stale after that, and removed after
//! `missed × interval`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::FedError;
use super::wire::Heartbeat;

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub announcement: Heartbeat,
    pub node_fqdn: String,
    pub node_id: String,
    pub last_seen: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    Stale,
}

impl Health {
    pub fn label(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Stale => "stale",
        }
    }
}

#[derive(Debug)]
pub struct Registry {
    interval: Duration,
    missed: u32,
    members: BTreeMap<String, Member>,
    /// Names removed for missed heartbeats, and when: a logout meanwhile still has to reach them if they
    /// come back, so the primary must remember who they were.
    departed: BTreeMap<String, Instant>,
}

impl Registry {
    pub fn new(interval: Duration, missed: u32) -> Registry {
        Registry {
            interval,
            missed: missed.max(1),
            members: BTreeMap::new(),
            departed: BTreeMap::new(),
        }
    }

    /// `None`: past the removal age (treated as gone even before [`Registry::prune`] runs).
    pub fn health(&self, m: &Member, now: Instant) -> Option<Health> {
        let age = now.saturating_duration_since(m.last_seen);
        if age > self.interval * self.missed {
            None
        } else if age.as_secs_f64() <= 1.5 * self.interval.as_secs_f64() {
            Some(Health::Healthy)
        } else {
            Some(Health::Stale)
        }
    }

    /// Records a heartbeat. A name held by another node is refused while that node is healthy, so a
    /// second cluster with a copied config cannot take over; once the holder went stale the name moves.
    pub fn register(
        &mut self,
        hb: Heartbeat,
        node_fqdn: &str,
        node_id: &str,
        now: Instant,
    ) -> Result<(), FedError> {
        if let Some(existing) = self.members.get(&hb.cluster_name)
            && existing.node_id != node_id
            && self.health(existing, now) == Some(Health::Healthy)
        {
            return Err(FedError::ClusterNameConflict {
                cluster: hb.cluster_name,
                holder: existing.node_fqdn.clone(),
            });
        }
        // One node holds one name: a member renamed in place must not linger under its old name.
        self.members
            .retain(|name, m| m.node_id != node_id || *name == hb.cluster_name);
        self.departed.remove(&hb.cluster_name);
        self.members.insert(
            hb.cluster_name.clone(),
            Member {
                announcement: hb,
                node_fqdn: node_fqdn.to_string(),
                node_id: node_id.to_string(),
                last_seen: now,
            },
        );
        Ok(())
    }

    /// Drops members past the removal age; returns their names (for the log).
    pub fn prune(&mut self, now: Instant) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| self.health(m, now).is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for n in &gone {
            self.members.remove(n);
            self.departed.insert(n.clone(), now);
        }
        self.departed
            .retain(|_, since| now.saturating_duration_since(*since) < super::RETRY_FOR);
        gone
    }

    /// Members removed for missed heartbeats within the retry period (also those past the removal age
    /// that [`Registry::prune`] has not dropped yet), by name.
    pub fn departed(&self, now: Instant) -> Vec<String> {
        let mut names: Vec<String> = self
            .members
            .values()
            .filter(|m| self.health(m, now).is_none())
            .map(|m| m.announcement.cluster_name.clone())
            .chain(
                self.departed
                    .iter()
                    .filter(|(_, since)| now.saturating_duration_since(**since) < super::RETRY_FOR)
                    .map(|(n, _)| n.clone()),
            )
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Members not yet removed, by name, with their health.
    pub fn list(&self, now: Instant) -> Vec<(&Member, Health)> {
        self.members
            .values()
            .filter_map(|m| self.health(m, now).map(|h| (m, h)))
            .collect()
    }

    pub fn get(&self, name: &str, now: Instant) -> Option<(&Member, Health)> {
        self.members
            .get(name)
            .and_then(|m| self.health(m, now).map(|h| (m, h)))
    }

    /// (healthy, stale) counts for the `tka_federation_members` gauge.
    pub fn counts(&self, now: Instant) -> (usize, usize) {
        let l = self.list(now);
        let healthy = l.iter().filter(|(_, h)| *h == Health::Healthy).count();
        (healthy, l.len() - healthy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(name: &str) -> Heartbeat {
        Heartbeat {
            cluster_name: name.into(),
            member_url: format!("https://{name}.ts.net"),
            api_endpoint: "https://10.0.0.1:6443".into(),
            ..Heartbeat::default()
        }
    }

    #[test]
    fn healthy_then_stale_then_removed() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Registry::new(s(30), 3);
        r.register(hb("west"), "tka-west.ts.net", "n1", t0).unwrap();
        assert_eq!(r.get("west", t0 + s(45)).unwrap().1, Health::Healthy);
        assert_eq!(r.get("west", t0 + s(46)).unwrap().1, Health::Stale);
        assert_eq!(r.counts(t0 + s(46)), (0, 1));
        assert_eq!(r.get("west", t0 + s(90)).unwrap().1, Health::Stale);
        assert!(
            r.get("west", t0 + s(91)).is_none(),
            "gone after 3 intervals"
        );
        assert!(r.list(t0 + s(91)).is_empty());
        assert_eq!(r.departed(t0 + s(91)), vec!["west".to_string()]);
        assert_eq!(r.prune(t0 + s(91)), vec!["west".to_string()]);
        assert_eq!(r.counts(t0 + s(91)), (0, 0));
        // Remembered for the retry period, forgotten when it registers again.
        assert_eq!(r.departed(t0 + s(92)), vec!["west".to_string()]);
        assert!(r.departed(t0 + s(91) + super::super::RETRY_FOR).is_empty());
        r.register(hb("west"), "tka-west.ts.net", "n1", t0 + s(100))
            .unwrap();
        assert!(r.departed(t0 + s(100)).is_empty());
    }

    #[test]
    fn heartbeat_refreshes_and_names_are_exclusive_while_healthy() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut r = Registry::new(s(30), 3);
        r.register(hb("west"), "tka-west.ts.net", "n1", t0).unwrap();
        r.register(hb("west"), "tka-west.ts.net", "n1", t0 + s(60))
            .unwrap();
        assert_eq!(r.get("west", t0 + s(100)).unwrap().1, Health::Healthy);
        let e = r
            .register(hb("west"), "evil.ts.net", "n2", t0 + s(100))
            .unwrap_err();
        assert_eq!(e.code(), "cluster_name_conflict");
        // Once the holder is stale, another node may take the name over.
        r.register(hb("west"), "tka-west2.ts.net", "n2", t0 + s(200))
            .unwrap();
        assert_eq!(r.get("west", t0 + s(200)).unwrap().0.node_id, "n2");
        // A renamed member does not linger under its old name.
        r.register(hb("east"), "tka-west2.ts.net", "n2", t0 + s(201))
            .unwrap();
        assert!(r.get("west", t0 + s(201)).is_none());
    }
}

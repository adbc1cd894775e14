//! The node's warm pool: pre-started runtime containers ("cells") waiting to be handed a function.
//!
//! A cell runs a built-in runtime's bootstrap with no function: its `/code` is an empty host
//! directory of its own, bind-mounted read-only, and its environment holds only what every
//! instance of its shape shares plus a one-time token. A cold start of a matching function
//! takes a cell ([`WarmPool::take`]), hard-links the function's unpacked code into the cell's
//! directory, sends the function's environment with the token (`POST /nubis/specialize`, which
//! the bootstrap accepts once), and from then on the cell is an ordinary instance of that
//! function: it is stopped and removed with it and never returns to the pool, so no container
//! ever serves two functions.
//!
//! The shape of a cell is what cannot change after a container starts: image, memory and CPU
//! limits, and port. Shapes a cold start asked for join the pool; a shape that ran out grows by
//! one cell (up to `max_per_shape`), and one that hands out nothing for `idle_secs` shrinks by
//! one. This module holds the bookkeeping only; [`super::docker::DockerNode`] creates, hands
//! out and removes the containers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::InstanceSpec;
use super::logs::LogCapture;
use crate::config::WarmPoolConfig;

/// What a cell must match to serve a function.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Shape {
    pub image: String,
    pub memory_mb: u32,
    /// Thousandths of a core, so that the shape can be hashed.
    pub millicpu: u32,
    pub port: u16,
}

impl Shape {
    pub fn cpu(&self) -> f64 {
        f64::from(self.millicpu) / 1000.0
    }

    /// The cell shape that can serve `spec`, if any: a built-in runtime's own bootstrap (no
    /// command of the function's, so custom runtimes and containers never qualify) with code.
    pub fn of(spec: &InstanceSpec, cell_images: &[String]) -> Option<Shape> {
        let eligible = spec.entrypoint.is_none()
            && spec.cmd.is_none()
            && spec.health_path.is_none()
            && spec.code_checksum.is_some()
            && cell_images.contains(&spec.image);
        eligible.then(|| Shape {
            image: spec.image.clone(),
            memory_mb: spec.memory_mb,
            millicpu: (spec.cpu * 1000.0).round() as u32,
            port: spec.port,
        })
    }

    /// The `nubis.cell` label value (also names the shape in logs).
    pub fn label(&self) -> String {
        format!("{}|{}MB|{}m|{}", self.image, self.memory_mb, self.millicpu, self.port)
    }
}

/// A started, ready cell waiting in the pool.
pub struct Cell {
    pub id: String,
    pub container_id: String,
    pub addr: SocketAddr,
    /// Proves the specialize call comes from this agent.
    pub token: String,
    /// Host directory mounted at the cell's /code.
    pub dir: PathBuf,
    /// Where the cell's output goes once it serves a function: its log follower runs from the
    /// container's start, and drops what comes before the hand-off.
    pub capture: Arc<OnceLock<Arc<LogCapture>>>,
}

#[derive(Default)]
struct ShapeState {
    idle: Vec<Cell>,
    /// How many idle cells the shape should have.
    target: usize,
    /// Prewarmed shapes never shrink below one cell.
    floor: usize,
    last_handout: Option<Instant>,
}

pub struct WarmPool {
    cfg: WarmPoolConfig,
    dir: PathBuf,
    /// Images whose bootstrap can wait as a cell (the python3 and nodejs families).
    images: Vec<String>,
    shapes: Mutex<HashMap<Shape, ShapeState>>,
    pub(super) wake: tokio::sync::Notify,
}

/// What the refill loop should do next.
pub enum Work {
    /// Start one cell of this shape.
    Fill(Shape),
    /// Remove these cells (their shape shrank).
    Trim(Vec<Cell>),
    Nothing,
}

impl WarmPool {
    pub fn new(cfg: WarmPoolConfig, dir: PathBuf, images: Vec<String>, prewarm: Vec<Shape>) -> Self {
        let shapes = prewarm.into_iter().map(|s| (s, ShapeState { target: 1, floor: 1, ..Default::default() })).collect();
        Self { cfg, dir, images, shapes: Mutex::new(shapes), wake: tokio::sync::Notify::new() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn images(&self) -> &[String] {
        &self.images
    }

    /// A ready cell of `shape`, if one waits. Either way the shape's demand is noted: a shape
    /// not yet pooled joins, and one that ran out grows.
    pub fn take(&self, shape: &Shape) -> Option<Cell> {
        let mut shapes = self.shapes.lock().expect("pool lock");
        let st = shapes.entry(shape.clone()).or_default();
        st.last_handout = Some(Instant::now());
        let cell = st.idle.pop();
        if cell.is_none() {
            st.target = (st.target + 1).min(self.cfg.max_per_shape);
        }
        drop(shapes);
        self.wake.notify_one();
        cell
    }

    /// Add a started cell; it comes back (and the caller removes it) when its shape no longer
    /// wants it.
    #[must_use]
    pub fn put(&self, shape: &Shape, cell: Cell) -> Option<Cell> {
        let mut shapes = self.shapes.lock().expect("pool lock");
        match shapes.get_mut(shape) {
            Some(st) if st.idle.len() < st.target => {
                st.idle.push(cell);
                None
            }
            _ => Some(cell),
        }
    }

    /// Shrink idle shapes, then pick the next cell to start: the shape furthest below its
    /// target, while the node holds fewer than `max_cells` idle cells.
    pub fn next_work(&self, now: Instant) -> Work {
        let idle_for = Duration::from_secs(self.cfg.idle_secs);
        let mut shapes = self.shapes.lock().expect("pool lock");
        let mut trimmed = Vec::new();
        for st in shapes.values_mut() {
            let quiet = st.last_handout.is_some_and(|t| now.saturating_duration_since(t) >= idle_for);
            if quiet && st.target > st.floor {
                st.target -= 1;
                // The next step down waits another whole idle period.
                st.last_handout = Some(now);
            }
            while st.idle.len() > st.target {
                trimmed.extend(st.idle.pop());
            }
        }
        shapes.retain(|_, st| st.target > 0 || !st.idle.is_empty());
        if !trimmed.is_empty() {
            return Work::Trim(trimmed);
        }
        let total: usize = shapes.values().map(|s| s.idle.len()).sum();
        if total >= self.cfg.max_cells {
            return Work::Nothing;
        }
        shapes
            .iter()
            .filter(|(_, st)| st.idle.len() < st.target)
            .max_by_key(|(s, st)| (st.target - st.idle.len(), std::cmp::Reverse(s.label())))
            .map_or(Work::Nothing, |(s, _)| Work::Fill(s.clone()))
    }

    /// Every idle cell, taken out (shutdown).
    pub fn drain(&self) -> Vec<Cell> {
        let mut shapes = self.shapes.lock().expect("pool lock");
        shapes.values_mut().flat_map(|st| std::mem::take(&mut st.idle)).collect()
    }

    /// Container ids of the idle cells (they are not orphans).
    pub fn container_ids(&self) -> Vec<String> {
        let shapes = self.shapes.lock().expect("pool lock");
        shapes.values().flat_map(|st| st.idle.iter().map(|c| c.container_id.clone())).collect()
    }

    /// Whether `dir` belongs to an idle cell.
    pub fn has_dir(&self, dir: &Path) -> bool {
        self.shapes.lock().expect("pool lock").values().any(|st| st.idle.iter().any(|c| c.dir == dir))
    }

    pub fn idle_count(&self) -> usize {
        self.shapes.lock().expect("pool lock").values().map(|s| s.idle.len()).sum()
    }
}

/// Make `src`'s tree appear under `dest` (an existing empty directory) by hard links, so a cell
/// gets a function's code in about a millisecond without copying it. Falls back to copying a
/// file that cannot be linked (another filesystem). Symlinks are recreated as they are.
pub fn link_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let (from, to) = (entry.path(), dest.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir(&to)?;
            std::fs::set_permissions(&to, std::fs::metadata(&from)?.permissions())?;
            link_tree(&from, &to)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_cells: usize, max_per_shape: usize) -> WarmPool {
        let cfg = WarmPoolConfig { enabled: true, max_cells, max_per_shape, prewarm: vec![], idle_secs: 60 };
        WarmPool::new(cfg, PathBuf::from("/nonexistent"), vec!["py".into()], vec![shape(128)])
    }

    fn shape(memory_mb: u32) -> Shape {
        Shape { image: "py".into(), memory_mb, millicpu: 150, port: 9000 }
    }

    fn cell(id: &str) -> Cell {
        Cell {
            id: id.into(),
            container_id: id.into(),
            addr: "127.0.0.1:9000".parse().unwrap(),
            token: String::new(),
            dir: PathBuf::new(),
            capture: Arc::default(),
        }
    }

    #[test]
    fn prewarmed_shape_is_filled_then_stops_at_target() {
        let p = pool(8, 4);
        assert!(matches!(p.next_work(Instant::now()), Work::Fill(s) if s == shape(128)));
        assert!(p.put(&shape(128), cell("a")).is_none());
        assert!(matches!(p.next_work(Instant::now()), Work::Nothing));
        // A second cell of a full shape is refused (the caller removes it).
        assert!(p.put(&shape(128), cell("b")).is_some());
    }

    #[test]
    fn a_miss_adds_the_shape_and_running_out_grows_it_up_to_the_cap() {
        let p = pool(8, 2);
        assert!(p.take(&shape(256)).is_none());
        assert!(p.put(&shape(128), cell("a")).is_none());
        assert!(matches!(p.next_work(Instant::now()), Work::Fill(s) if s == shape(256)));
        assert!(p.put(&shape(256), cell("b")).is_none());
        // Taken, then a miss: the shape ran out and grows to 2, but never past max_per_shape.
        assert_eq!(p.take(&shape(256)).unwrap().id, "b");
        assert!(p.take(&shape(256)).is_none());
        assert!(p.take(&shape(256)).is_none());
        assert!(p.put(&shape(256), cell("c")).is_none());
        assert!(p.put(&shape(256), cell("d")).is_none());
        assert!(p.put(&shape(256), cell("e")).is_some());
    }

    #[test]
    fn the_node_total_is_capped() {
        let p = pool(1, 4);
        assert!(p.put(&shape(128), cell("a")).is_none());
        assert!(p.take(&shape(512)).is_none());
        assert!(matches!(p.next_work(Instant::now()), Work::Nothing));
    }

    #[test]
    fn idle_shapes_shrink_one_cell_per_idle_period_but_prewarmed_keep_one() {
        let p = pool(8, 4);
        let t0 = Instant::now();
        assert!(p.take(&shape(256)).is_none());
        assert!(p.take(&shape(256)).is_none());
        assert!(p.put(&shape(256), cell("a")).is_none());
        assert!(p.put(&shape(256), cell("b")).is_none());
        assert!(p.put(&shape(128), cell("p")).is_none());
        assert!(p.take(&shape(128)).is_some());
        assert!(p.put(&shape(128), cell("q")).is_none());
        let later = t0 + Duration::from_secs(61);
        // 256 MB: 2 → 1, then 1 → 0; prewarmed 128 MB stays at its floor of one.
        let Work::Trim(cells) = p.next_work(later) else { panic!("expected a trim") };
        assert_eq!(cells.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["b"]);
        let Work::Trim(cells) = p.next_work(later + Duration::from_secs(61)) else { panic!("expected a trim") };
        assert_eq!(cells.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(p.idle_count(), 1);
        assert!(matches!(p.next_work(later + Duration::from_secs(200)), Work::Nothing));
    }

    #[test]
    fn only_a_bootstrap_runtime_with_code_has_a_shape() {
        let spec = |image: &str, cmd: Option<Vec<String>>, code: Option<&str>| InstanceSpec {
            instance_id: "i".into(),
            function_name: "f".into(),
            version: None,
            revision: 1,
            image: image.into(),
            entrypoint: None,
            cmd,
            code_checksum: code.map(Into::into),
            env: vec![],
            memory_mb: 128,
            cpu: 0.15,
            concurrency: 1,
            port: 9000,
            health_path: None,
            prints_log_markers: true,
            initializer_timeout: None,
            base_headers: Default::default(),
        };
        let images = vec!["py".to_string()];
        assert_eq!(Shape::of(&spec("py", None, Some("1")), &images), Some(shape(128)));
        assert_eq!(Shape::of(&spec("custom", None, Some("1")), &images), None);
        assert_eq!(Shape::of(&spec("py", Some(vec!["/code/bootstrap".into()]), Some("1")), &images), None);
        assert_eq!(Shape::of(&spec("py", None, None), &images), None);
    }
}

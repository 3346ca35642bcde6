//! What `rheon checkpoint inspect DIR` shows: [`inspect_checkpoint`] reads a checkpoint's
//! `_metadata` and every state file it names into a [`CheckpointReport`], whose
//! `Display` is the printed report. Unlike [`verify`](fn@super::verify), it does not stop at
//! the first problem: every corrupt section, unreadable or missing file is reported.

use std::fmt;
use std::path::{Path, PathBuf};

use super::error::CheckpointError;
use super::layout::scan;
use super::metadata::{read_metadata, CheckpointMetadata, KeyedStateFiles, OperatorSnapshot};
use super::verify::{classify, header_mismatch, open_state_file, Target};
use crate::snapshot::SnapshotReport;

/// Key groups up to which the histogram prints every key group's count.
pub const HISTOGRAM_ROWS_KEY_GROUPS_MAX: usize = 256;

/// Key groups per printed histogram row.
pub const HISTOGRAM_ROW_KEY_GROUPS: usize = 16;

/// Corrupt key groups named per file before "and N more".
const CORRUPT_KEY_GROUPS_NAMED_MAX: usize = 8;

/// The report on one checkpoint (and, if a root was given, the list of the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The checkpoint directory reported on.
    pub dir: PathBuf,
    /// The checkpoint's id.
    pub checkpoint_id: u64,
    /// Whether it is a savepoint.
    pub savepoint: bool,
    /// The job's name.
    pub job_name: String,
    /// When it was triggered, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The job's max parallelism.
    pub max_parallelism: u32,
    /// One report per operator, in the metadata's order.
    pub operators: Vec<OperatorReport>,
    /// The root, when a root was given rather than a checkpoint directory.
    pub root: Option<PathBuf>,
    /// The root's other checkpoint directories, newest first (empty without a root).
    pub others: Vec<OtherCheckpoint>,
}

/// One operator of a [`CheckpointReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorReport {
    /// The operator's node id.
    pub node: u32,
    /// The operator's name.
    pub name: String,
    /// Its parallelism when the checkpoint was taken.
    pub parallelism: u32,
    /// Operator-state elements.
    pub operator_state_elements: usize,
    /// Bytes of all operator-state elements.
    pub operator_state_bytes: u64,
    /// Input channels with in-flight buffers.
    pub channel_state_channels: usize,
    /// In-flight buffers.
    pub channel_state_buffers: usize,
    /// Bytes of all in-flight buffers.
    pub channel_state_bytes: u64,
    /// One report per keyed state.
    pub keyed_states: Vec<KeyedStateReport>,
}

/// One keyed state of an [`OperatorReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyedStateReport {
    /// The state's name.
    pub name: String,
    /// One report per file, in the metadata's order.
    pub files: Vec<StateFileReport>,
    /// One report per changelog file of an incremental checkpoint, in the metadata's
    /// order (their entries are changes, not counted in the histogram).
    pub deltas: Vec<StateFileReport>,
    /// Entries per key group over the readable files, indexed by key group (length: the
    /// max parallelism); `None` for a key group no readable file holds.
    pub entries_per_key_group: Vec<Option<u64>>,
    /// Key groups held by more than one file.
    pub key_groups_in_two_files: u32,
}

/// One state file of a [`KeyedStateReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateFileReport {
    /// The name in the metadata, relative to the checkpoint directory.
    pub file: String,
    /// The file's path.
    pub path: PathBuf,
    /// What was found.
    pub status: StateFileStatus,
}

/// What was found for a state file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateFileStatus {
    /// The file opened: its histogram and per-key-group checksums.
    Read {
        /// The file's report.
        report: SnapshotReport,
        /// Set when its header contradicts the metadata (state name, max parallelism).
        mismatch: Option<String>,
    },
    /// The file does not exist.
    Missing,
    /// The file cannot be opened: I/O error, or a bad header, index or footer.
    Unreadable {
        /// The error.
        error: String,
        /// Whether its bytes are bad (rather than an I/O error).
        corruption: bool,
    },
}

/// Another checkpoint directory of the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtherCheckpoint {
    /// Its path.
    pub path: PathBuf,
    /// Its id.
    pub id: u64,
    /// Whether it is a savepoint.
    pub savepoint: bool,
    /// What it is.
    pub status: OtherStatus,
}

/// The state of another checkpoint directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtherStatus {
    /// It has `_metadata` (not verified).
    Completed,
    /// It has no `_metadata`.
    Incomplete,
    /// Its `_metadata` cannot be read; the error.
    Unreadable(String),
}

impl CheckpointReport {
    /// Key-group sections whose checksum fails, plus files whose header, index or footer
    /// is bad.
    pub fn corrupt_sections(&self) -> usize {
        self.files()
            .map(|file| match &file.status {
                StateFileStatus::Read { report, .. } => report.corrupt_key_groups().len(),
                StateFileStatus::Unreadable { corruption, .. } => usize::from(*corruption),
                StateFileStatus::Missing => 0,
            })
            .sum()
    }

    /// State files that do not exist.
    pub fn missing_files(&self) -> usize {
        self.files()
            .filter(|file| file.status == StateFileStatus::Missing)
            .count()
    }

    /// Other problems: files that cannot be read for an I/O error, headers that
    /// contradict the metadata, key groups in no readable file or in two files.
    pub fn other_problems(&self) -> usize {
        let files: usize = self
            .files()
            .filter(|file| match &file.status {
                StateFileStatus::Read { mismatch, .. } => mismatch.is_some(),
                StateFileStatus::Unreadable { corruption, .. } => !corruption,
                StateFileStatus::Missing => false,
            })
            .count();
        // Key groups of a missing or unreadable file are already counted with it.
        let coverage: usize = self
            .keyed_states()
            .filter(|state| {
                let all_read = state
                    .files
                    .iter()
                    .all(|file| matches!(file.status, StateFileStatus::Read { .. }));
                (all_read && state.uncovered_key_groups() > 0) || state.key_groups_in_two_files > 0
            })
            .count();
        files + coverage
    }

    /// Whether every file is present and every checksum holds.
    pub fn is_ok(&self) -> bool {
        self.corrupt_sections() == 0 && self.missing_files() == 0 && self.other_problems() == 0
    }

    fn keyed_states(&self) -> impl Iterator<Item = &KeyedStateReport> {
        self.operators.iter().flat_map(|op| &op.keyed_states)
    }

    fn files(&self) -> impl Iterator<Item = &StateFileReport> {
        self.keyed_states()
            .flat_map(|state| state.files.iter().chain(&state.deltas))
    }
}

impl KeyedStateReport {
    /// Key groups no readable file holds.
    pub fn uncovered_key_groups(&self) -> usize {
        self.entries_per_key_group
            .iter()
            .filter(|n| n.is_none())
            .count()
    }

    /// Entries over the readable files.
    pub fn entry_count(&self) -> u64 {
        self.entries_per_key_group.iter().flatten().sum()
    }
}

/// Reports on a checkpoint directory (one holding `_metadata` or named
/// `chk-<id>`/`savepoint-<id>`, or its `_metadata` file) or on the newest completed
/// checkpoint of a root whose `_metadata` reads, listing the root's others. Fails only if
/// no `_metadata` can be read; problems with state files are in the report.
pub fn inspect_checkpoint(dir: &Path) -> Result<CheckpointReport, CheckpointError> {
    let root = match classify(dir) {
        Target::Checkpoint(dir) => {
            let metadata = read_metadata(&dir)?;
            return Ok(report(&dir, &metadata));
        }
        Target::Root(root) => root,
    };
    let entries = scan(&root)?;
    let mut tried = Vec::new();
    let mut chosen = None;
    let mut others = Vec::new();
    for entry in entries.into_iter().filter(|entry| entry.is_dir) {
        let status = if !entry.complete {
            OtherStatus::Incomplete
        } else if chosen.is_some() {
            OtherStatus::Completed
        } else {
            match read_metadata(&entry.path) {
                Ok(metadata) => {
                    chosen = Some((entry.path, metadata));
                    continue;
                }
                Err(error) => {
                    let status = OtherStatus::Unreadable(error.to_string());
                    tried.push((entry.path.clone(), error));
                    status
                }
            }
        };
        others.push(OtherCheckpoint {
            path: entry.path,
            id: entry.id,
            savepoint: entry.savepoint,
            status,
        });
    }
    let Some((dir, metadata)) = chosen else {
        let incomplete = others
            .iter()
            .filter(|other| other.status == OtherStatus::Incomplete)
            .count();
        return Err(CheckpointError::NoValidCheckpoint {
            root,
            tried,
            incomplete,
        });
    };
    let mut report = report(&dir, &metadata);
    report.root = Some(root);
    report.others = others;
    Ok(report)
}

fn report(dir: &Path, metadata: &CheckpointMetadata) -> CheckpointReport {
    CheckpointReport {
        dir: dir.to_path_buf(),
        checkpoint_id: metadata.checkpoint_id,
        savepoint: metadata.savepoint,
        job_name: metadata.job_name.clone(),
        timestamp_ms: metadata.timestamp_ms,
        max_parallelism: metadata.max_parallelism,
        operators: metadata
            .operators
            .iter()
            .map(|operator| operator_report(dir, metadata, operator))
            .collect(),
        root: None,
        others: Vec::new(),
    }
}

fn operator_report(
    dir: &Path,
    metadata: &CheckpointMetadata,
    operator: &OperatorSnapshot,
) -> OperatorReport {
    let buffers = operator
        .channel_state
        .iter()
        .flat_map(|entry| &entry.buffers);
    OperatorReport {
        node: operator.node,
        name: operator.name.clone(),
        parallelism: operator.parallelism,
        operator_state_elements: operator.operator_state.len(),
        operator_state_bytes: operator.operator_state.iter().map(|e| e.len() as u64).sum(),
        channel_state_channels: operator.channel_state.len(),
        channel_state_buffers: buffers.clone().count(),
        channel_state_bytes: buffers.map(|buffer| buffer.len() as u64).sum(),
        keyed_states: operator
            .keyed_states
            .iter()
            .map(|state| keyed_state_report(dir, metadata, operator, state))
            .collect(),
    }
}

fn keyed_state_report(
    dir: &Path,
    metadata: &CheckpointMetadata,
    operator: &OperatorSnapshot,
    state: &KeyedStateFiles,
) -> KeyedStateReport {
    let mut entries_per_key_group = vec![None; metadata.max_parallelism as usize];
    let mut key_groups_in_two_files = 0;
    let open = |name: &String| -> (StateFileReport, Option<SnapshotReport>) {
        let (status, counted) = match open_state_file(dir, operator, state, name) {
            Ok(file) => {
                let mismatch = header_mismatch(&file, state, metadata.max_parallelism);
                let report = file.report();
                let counted = mismatch.is_none().then(|| report.clone());
                (StateFileStatus::Read { report, mismatch }, counted)
            }
            Err(CheckpointError::MissingStateFile { .. }) => (StateFileStatus::Missing, None),
            Err(error) => (
                StateFileStatus::Unreadable {
                    corruption: error.is_corruption(),
                    error: match error {
                        CheckpointError::StateFile { error, .. } => error.to_string(),
                        error => error.to_string(),
                    },
                },
                None,
            ),
        };
        let file = StateFileReport {
            file: name.clone(),
            path: dir.join(name),
            status,
        };
        (file, counted)
    };
    let mut files = Vec::with_capacity(state.files.len());
    for name in &state.files {
        let (file, counted) = open(name);
        for kg in counted.iter().flat_map(|report| &report.key_groups) {
            // In range: the header's max parallelism is the metadata's.
            let slot = &mut entries_per_key_group[kg.key_group as usize];
            if slot.is_some() {
                key_groups_in_two_files += 1;
            }
            *slot = Some(slot.unwrap_or(0) + kg.entry_count);
        }
        files.push(file);
    }
    let deltas = state.deltas.iter().map(|name| open(name).0).collect();
    KeyedStateReport {
        name: state.name.clone(),
        files,
        deltas,
        entries_per_key_group,
        key_groups_in_two_files,
    }
}

impl fmt::Display for CheckpointReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.savepoint {
            "savepoint"
        } else {
            "checkpoint"
        };
        writeln!(f, "{kind} {} at {}", self.checkpoint_id, self.dir.display())?;
        writeln!(f, "  job:             {}", self.job_name)?;
        writeln!(
            f,
            "  taken:           {} ({} ms)",
            format_utc(self.timestamp_ms),
            self.timestamp_ms
        )?;
        writeln!(f, "  max parallelism: {}", self.max_parallelism)?;
        writeln!(f, "  operators:       {}", self.operators.len())?;
        for operator in &self.operators {
            write!(f, "{operator}")?;
        }
        if let Some(root) = &self.root {
            if self.others.is_empty() {
                writeln!(f, "no other checkpoints in {}", root.display())?;
            } else {
                writeln!(f, "other checkpoints in {}:", root.display())?;
                for other in &self.others {
                    let name = other.path.file_name().unwrap_or_default().to_string_lossy();
                    match &other.status {
                        OtherStatus::Completed => writeln!(f, "  {name}: completed")?,
                        OtherStatus::Incomplete => {
                            writeln!(f, "  {name}: incomplete (no _metadata)")?
                        }
                        OtherStatus::Unreadable(error) => {
                            writeln!(f, "  {name}: unreadable: {error}")?
                        }
                    }
                }
            }
        }
        let (corrupt, missing, other) = (
            self.corrupt_sections(),
            self.missing_files(),
            self.other_problems(),
        );
        if corrupt + missing + other == 0 {
            return writeln!(f, "all checksums hold");
        }
        let mut parts = Vec::new();
        if corrupt > 0 {
            parts.push(plural(corrupt, "corrupt section", "corrupt sections"));
        }
        if missing > 0 {
            parts.push(plural(missing, "missing state file", "missing state files"));
        }
        if other > 0 {
            parts.push(plural(other, "other problem", "other problems"));
        }
        writeln!(f, "{}", parts.join(", "))
    }
}

impl fmt::Display for OperatorReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "operator {} {:?}, parallelism {}",
            self.node, self.name, self.parallelism
        )?;
        if self.operator_state_elements == 0 {
            writeln!(f, "  operator state: none")?;
        } else {
            writeln!(
                f,
                "  operator state: {}, {}",
                plural(self.operator_state_elements, "element", "elements"),
                human_bytes(self.operator_state_bytes)
            )?;
        }
        if self.channel_state_channels == 0 {
            writeln!(f, "  channel state:  none")?;
        } else {
            writeln!(
                f,
                "  channel state:  {} in {}, {}",
                plural(self.channel_state_buffers, "buffer", "buffers"),
                plural(self.channel_state_channels, "channel", "channels"),
                human_bytes(self.channel_state_bytes)
            )?;
        }
        for state in &self.keyed_states {
            write!(f, "{state}")?;
        }
        Ok(())
    }
}

impl fmt::Display for KeyedStateReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  keyed state {:?}: {}, {}",
            self.name,
            plural(self.files.len(), "file", "files"),
            plural(self.entry_count() as usize, "entry", "entries")
        )?;
        let width = self
            .files
            .iter()
            .chain(&self.deltas)
            .map(|file| file.file.len())
            .max()
            .unwrap_or(0);
        for file in &self.files {
            write_file_line(f, file, width)?;
        }
        if !self.deltas.is_empty() {
            writeln!(
                f,
                "    then {} replayed in order:",
                plural(self.deltas.len(), "changelog file", "changelog files")
            )?;
            for file in &self.deltas {
                write_file_line(f, file, width)?;
            }
        }
        let uncovered = self.uncovered_key_groups();
        if uncovered > 0 {
            writeln!(
                f,
                "    {} in no readable file",
                plural(uncovered, "key group", "key groups")
            )?;
        }
        if self.key_groups_in_two_files > 0 {
            writeln!(
                f,
                "    {} in two files",
                plural(
                    self.key_groups_in_two_files as usize,
                    "key group",
                    "key groups"
                )
            )?;
        }
        write_histogram(f, &self.entries_per_key_group)
    }
}

/// One state file's line: key groups, entries, size, checksums, or what is wrong.
fn write_file_line(
    f: &mut fmt::Formatter<'_>,
    file: &StateFileReport,
    width: usize,
) -> fmt::Result {
    write!(f, "    {:width$}  ", file.file)?;
    match &file.status {
        StateFileStatus::Read { report, mismatch } => {
            write!(
                f,
                "key groups {}, {}, {}, ",
                report.meta.key_groups,
                plural(report.entry_count as usize, "entry", "entries"),
                human_bytes(report.size_bytes)
            )?;
            let bad = report.corrupt_key_groups();
            if bad.is_empty() {
                write!(f, "checksums ok")?;
            } else {
                write!(f, "CORRUPT in {}", describe_key_groups(&bad))?;
            }
            if let Some(mismatch) = mismatch {
                write!(f, "; DOES NOT FIT: {mismatch}")?;
            }
            writeln!(f)
        }
        StateFileStatus::Missing => writeln!(f, "MISSING ({})", file.path.display()),
        StateFileStatus::Unreadable { error, .. } => writeln!(f, "UNREADABLE: {error}"),
    }
}

/// `min, median, max (key group), empty`, then rows of counts ("-" for key groups no
/// readable file holds), or the largest key groups when there are too many to print.
fn write_histogram(f: &mut fmt::Formatter<'_>, counts: &[Option<u64>]) -> fmt::Result {
    let mut known: Vec<(u64, usize)> = counts
        .iter()
        .enumerate()
        .filter_map(|(kg, n)| n.map(|n| (n, kg)))
        .collect();
    if known.is_empty() {
        return writeln!(f, "    entries per key group: no readable file");
    }
    known.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let (min, median, (max, max_kg)) =
        (known[0].0, known[known.len() / 2].0, known[known.len() - 1]);
    let empty = known.iter().filter(|(n, _)| *n == 0).count();
    writeln!(
        f,
        "    entries per key group: min {min}, median {median}, max {max} (key group {max_kg}), \
         {empty} empty"
    )?;
    if counts.len() > HISTOGRAM_ROWS_KEY_GROUPS_MAX {
        let largest: Vec<String> = known
            .iter()
            .rev()
            .take(HISTOGRAM_ROW_KEY_GROUPS / 2)
            .map(|(n, kg)| format!("{kg}: {n}"))
            .collect();
        return writeln!(f, "    largest key groups: {}", largest.join(", "));
    }
    let width = max.to_string().len();
    let label_width = (counts.len() - 1).to_string().len();
    for (row, chunk) in counts.chunks(HISTOGRAM_ROW_KEY_GROUPS).enumerate() {
        write!(f, "    {:>label_width$}:", row * HISTOGRAM_ROW_KEY_GROUPS)?;
        for count in chunk {
            match count {
                Some(n) => write!(f, " {n:>width$}")?,
                None => write!(f, " {:>width$}", "-")?,
            }
        }
        writeln!(f)?;
    }
    Ok(())
}

fn describe_key_groups(key_groups: &[u32]) -> String {
    let named: Vec<String> = key_groups
        .iter()
        .take(CORRUPT_KEY_GROUPS_NAMED_MAX)
        .map(u32::to_string)
        .collect();
    let noun = if key_groups.len() == 1 {
        "key group"
    } else {
        "key groups"
    };
    let more = key_groups
        .len()
        .saturating_sub(CORRUPT_KEY_GROUPS_NAMED_MAX);
    if more > 0 {
        format!("{noun} {} and {more} more", named.join(", "))
    } else {
        format!("{noun} {}", named.join(", "))
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `512 B`, `2.0 KiB`, `1.5 GiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic Gregorian,
/// UTC).
pub fn format_utc(timestamp_ms: i64) -> String {
    let (secs, millis) = (timestamp_ms.div_euclid(1000), timestamp_ms.rem_euclid(1000));
    let (days, secs_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day),
/// proleptic Gregorian. Also the engine's calendar (Nexmark's dates).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59.999Z");
        // Extremes format without overflow.
        let _ = format_utc(i64::MIN);
        let _ = format_utc(i64::MAX);
    }

    #[test]
    fn sizes_and_key_group_lists() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
        assert_eq!(describe_key_groups(&[7]), "key group 7");
        assert_eq!(describe_key_groups(&[1, 2]), "key groups 1, 2");
        let many: Vec<u32> = (0..10).collect();
        assert_eq!(
            describe_key_groups(&many),
            "key groups 0, 1, 2, 3, 4, 5, 6, 7 and 2 more"
        );
    }
}

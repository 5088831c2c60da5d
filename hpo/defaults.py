"""Every tunable period, timeout and default of hpo, and the name of every environment
variable it reads, in one place (as RQ's ``defaults.py``): two copies of a number drift
apart, one cannot.

Standard library only and nothing from hpo: this module is read on the SDK path, inside
every task an agent runs, where ``import hpo`` must stay a matter of milliseconds.
A value here is the default; command-line options (``hpo-agent --heartbeat``) and
arguments override it where they exist.
"""

from __future__ import annotations

import os
from pathlib import Path

# ----- environment variables ----------------------------------------------------------

ENV_HOME = "HPO_HOME"  # where the embedded store, broker, logs and checkpoints live
ENV_STORE_URL = "HPO_STORE_URL"  # a SQLAlchemy URL; default: a SQLite file in HPO_HOME
ENV_BROKER_URL = "HPO_BROKER_URL"  # redis://, amqp://; default: the embedded broker
# Files that hold those URLs (Docker and Kubernetes secrets): a password stays out of
# the environment and off every command line. hpo.settings resolves them.
ENV_STORE_URL_FILE = "HPO_STORE_URL_FILE"
ENV_BROKER_URL_FILE = "HPO_BROKER_URL_FILE"
# Set by an agent for its scripts: the URL variables it withheld because they hold a
# password (hpo.agent.script_env), so a script's store read says why instead of opening
# the default store.
ENV_WITHHELD_URLS = "HPO_WITHHELD_URLS"
ENV_LOST_AFTER_S = "HPO_LOST_AFTER_S"  # overrides LOST_AFTER_S for every process
ENV_REPUBLISH_AFTER_S = "HPO_REPUBLISH_AFTER_S"  # overrides REPUBLISH_AFTER_S likewise
ENV_CHECKPOINT_ROOT = "HPO_CHECKPOINT_ROOT"  # shared storage for checkpoints on a cluster
ENV_ARTIFACT_ROOT = "HPO_ARTIFACT_ROOT"  # shared storage for artifacts and media likewise
# Set by the agent for the script it runs (hpo.sdk.channel describes the protocol):
ENV_TASK_ID = "HPO_TASK_ID"  # the task being run; its presence means "under an agent"
ENV_TASK_SPEC = "HPO_TASK_SPEC"  # a JSON file: id, project, name, parameters, checkpoints
ENV_REPORT_ADDR = "HPO_REPORT_ADDR"  # unix:/path or tcp:127.0.0.1:PORT of the channel

# A dot folder in the user's home: works with no set-up on a laptop; a cluster points
# HPO_STORE_URL and HPO_BROKER_URL at servers instead.
DEFAULT_HOME = "~/.hpo"


def hpo_home() -> Path:
    """``$HPO_HOME``, else ``~/.hpo`` (read at each call: tests and tools set it late)."""
    return Path(os.environ.get(ENV_HOME) or DEFAULT_HOME).expanduser()


def checkpoint_root() -> Path:
    """``$HPO_CHECKPOINT_ROOT``, else ``$HPO_HOME/checkpoints``."""
    root = os.environ.get(ENV_CHECKPOINT_ROOT)
    return Path(root).expanduser() if root else hpo_home() / "checkpoints"


def artifact_root() -> Path:
    """``$HPO_ARTIFACT_ROOT``, else ``$HPO_HOME/artifacts``: a folder, never a URL (the
    store records paths relative to it, so hosts may mount it at different places)."""
    root = os.environ.get(ENV_ARTIFACT_ROOT)
    return Path(root).expanduser() if root else hpo_home() / "artifacts"


# The execution queue of a task enqueued without one, and the one an agent serves when
# told none: a single machine needs no queue names at all.
DEFAULT_QUEUE = "default"

# ----- the store and the embedded broker ----------------------------------------------

# How long a SQLite writer (the store, and the embedded broker's file) waits for another
# process's write lock before failing with "database is locked": many agents write at
# once, and a write takes milliseconds, so 30 s only ever runs out on a stuck process.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# PostgreSQL over a link that dies without a word (a partition, a host gone): a connect
# gives up after this long, and TCP keepalives (idle 5 s, then 3 probes 2 s apart) plus
# a 15 s user timeout fail a query in flight after about 15 s, not the kernel's many
# minutes. A store URL's own query parameters (?connect_timeout=...) win.
PG_CONNECT_TIMEOUT_S = 5
PG_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                 "keepalives_count": 3, "tcp_user_timeout": 15_000}
# ... and the server's side of it: a client cut off inside a transaction keeps its row
# locks (a task's, which every re-queue of that task then waits for) until the server
# sees it gone. These session settings make the server drop such a session within about
# 10-15 s (tcp_user_timeout: also while the server's data for the client goes
# unacknowledged, when no keepalive is sent); hpo's transactions last milliseconds. A
# URL's own ?options=... replaces them (a pooler such as PgBouncer refuses startup
# options: give options= empty there).
PG_SESSION_OPTIONS = ("-c idle_in_transaction_session_timeout=10000 "
                      "-c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
                      "-c tcp_keepalives_count=3 -c tcp_user_timeout=15000")
# hpo's connections name themselves so (where the URL sets no application_name): how a
# reaper tells hpo's sessions from other clients of a shared database.
PG_APPLICATION_NAME = "hpo"
# A session of hpo's still inside a transaction (or still sending a statement) this long
# after its last change is a cut-off or frozen client: hpo's transactions last
# milliseconds. The server's timeout above normally ends it at 10 s, but not always: in a
# CI run of the multi-host test a session cut off inside a report write stayed "idle in
# transaction", holding its task's row lock, for over 35 s (so no reaper could re-queue
# the task). A reaper round that finds lost tasks ends such sessions itself
# (pg_terminate_backend).
PG_STUCK_SESSION_S = 12.0
# The embedded broker on a SQLite file rings a doorbell on each publish (hpo.wakeups), and
# an idle consumer waits for that ring; it still polls this often, in case a ring is lost
# (a full socket buffer, a folder it cannot write). A lost ring then costs one trial half
# a second; an idle agent's poll (one short write transaction) twice a second costs
# nothing measurable.
EMBEDDED_FALLBACK_POLL_S = 0.5
# ... and polls this often where there is no doorbell (the file's folder is not writable,
# the broker is not a SQLite file): this bounds the dispatch delay it adds, and 50 ms of
# polling per agent costs next to nothing.
EMBEDDED_POLL_S = 0.05
# A store on PostgreSQL announces its changes with NOTIFY (hpo.wakeups): the listening
# connection is checked this often for a close (the thread's only wait; its waiter is
# woken by notifications, not by this), and after losing its connection it tries to
# connect again this often (a server restart takes seconds; the waiter polls meanwhile).
PG_LISTEN_TICK_S = 1.0
PG_LISTEN_RETRY_S = 1.0
# A pooled PostgreSQL connection idle for longer than this is pinged before it is used
# (one that was cut is replaced, not handed out); one used more recently is not: a ping
# per transaction was a round trip on every write of a trial's path. A connection cut
# within that second fails its next statement, which every caller retries.
PG_PING_IDLE_S = 1.0

# ----- lost agents and the reaper -----------------------------------------------------

# A running task whose agent sent no heartbeat for this long is lost: six heartbeats
# (HEARTBEAT_S) missed, so a busy machine or a slow store is not taken for a dead agent.
LOST_AFTER_S = 30.0
# Re-queues of a lost task before it fails with "agent lost": one, so a task that kills
# its agent (out of memory) does not take down every agent in turn.
LOST_TASK_RETRIES = 1
# Agents and controllers look for lost tasks this often: a tenth of a detection delay
# that is LOST_AFTER_S anyway, for one cheap query.
REAP_PERIOD_S = 5.0
# A task queued this long while its queue holds fewer waiting messages than it has
# queued tasks lost its message (a Redis restart or flush loses every waiting one): the
# reaper publishes it again. A minute is far longer than a publish takes to arrive, and
# short next to what a stranded task would wait otherwise (forever); a backlog whose
# messages are all there is never published again, however long it waits.
REPUBLISH_AFTER_S = 60.0


# ----- the agent ----------------------------------------------------------------------

# An agent that stopped keeps its row (stopped_at set) this long, so `hpo ui` can say
# which agents ran the last optimizations and when they left: a day covers yesterday's
# run; the rows are one per agent name, so keeping them costs nothing.
STOPPED_WORKERS_KEPT_S = 24 * 3600.0
# Heartbeat period: well under LOST_AFTER_S, and one small write per agent.
HEARTBEAT_S = 5.0
# Running tasks are checked for a stop request this often (the issue asks for < 1 s);
# one query for all of an agent's tasks.
STOP_POLL_S = 0.25
# On SIGTERM, how long running tasks may finish before they are stopped and re-queued:
# long enough for an epoch to end, short enough for a deploy.
SHUTDOWN_TIMEOUT_S = 60.0
# Between SIGTERM and SIGKILL when a task is stopped: time to save a checkpoint.
GRACE_S = 10.0
# After SIGKILL, how long to wait for the killed processes to be gone: the kernel
# needs milliseconds, more means a process stuck in the kernel (D state) we cannot help.
KILL_WAIT_S = 5.0
# After the script exits, its output is read to the end for at most this long: a
# grandchild that keeps the pipes open must not hold the slot.
OUTPUT_DRAIN_S = 5.0
# Warm slots (hpo.agent.warm). How long a warm process may take to import hpo and the
# --preload modules before its slot gives up and spawns: torch takes 5-10 s on a slow
# disk; a minute means a hung import.
WARM_START_TIMEOUT_S = 60.0
# Room reserved in a warm process's command line for its children's (`python script.py
# ARGS` as ps shows it): longer command lines are cut there, in ps only.
WARM_TITLE_BYTES = 4096
# The exit status a forked script gets when its warm process died while it ran and took
# the real one with it: not a signal number nor an exit code (describe_exit says so).
UNKNOWN_EXIT = -1000
# Set to 1: hpo-agent spawns every script (as --spawn) instead of forking warm ones.
ENV_AGENT_SPAWN = "HPO_AGENT_SPAWN"
# How often the runner looks at its script (exit, stop, time limit): a script that
# exits frees its slot within this.
RUNNER_POLL_S = 0.05
# Output stored per task; the rest is counted, not kept (a script printing gigabytes
# must not fill the store).
MAX_LOG_MB = 10.0
# Longer output lines are cut (the agent's and a script run by hand alike): they are
# almost always progress bars or binary noise.
MAX_LOG_LINE_CHARS = 10_000
# Resource sampling (CPU, memory, GPU) period: a trend, not a profile.
MONITOR_PERIOD_S = 5.0
# nvidia-smi answers in well under a second; a hung driver must not hang the sampler.
NVIDIA_SMI_TIMEOUT_S = 5.0
# The agent writes a run's reports and output this often (the issue asks for a report
# in the store within 200 ms).
AGENT_FLUSH_PERIOD_S = 0.1
# At the end of a run the recorder writes what it still holds; a store that does not
# answer in this long loses those last reports rather than hold the slot forever.
RECORDER_CLOSE_TIMEOUT_S = 10.0
# Waiting loops that watch another thread or process (running tasks draining, local
# agents registering) look this often: a person waits for them, a tenth of a second
# is instant to them and costs nothing.
WATCH_POLL_S = 0.1
# An outcome the agent could not write (the store away) is tried again after 0.5 s, then
# twice as long each time up to 10 s, until the store takes or refuses it: quick after a
# blink, and one query per 10 s per agent during a long outage.
OUTBOX_RETRY_FIRST_S = 0.5
OUTBOX_RETRY_MAX_S = 10.0
# An outcome whose writes fail this many times with the store reachable (an error that
# is no outage) is given up: its run is recorded as failed, saying why, about 3 minutes
# of retries later, rather than its task left running for ever.
OUTBOX_MAX_FAILURES = 20
# A claimed task waits this long for a store that failed right after its claim (backing
# off as the outbox does) before it is given back: an outage of a minute must not make a
# task run twice, and its slot could take nothing else meanwhile.
START_WAIT_S = 60.0
# When the store fails before a message's claim, wait this long before giving the
# message back to the broker, so a store outage is not a busy loop of redeliveries.
STORE_RETRY_S = 1.0

# ----- the SDK ------------------------------------------------------------------------

# A script run by hand writes its reports in batches at most this old or this large:
# one transaction per batch instead of one per report, and a live view lags 0.5 s.
SDK_FLUSH_PERIOD_S = 0.5
SDK_FLUSH_BATCH = 500
# A plot, table or other report kept inline in the store up to this size (JSON text); a
# larger one is written as a file beside the artifacts and the store keeps its path: a
# row stays small, and a report under an agent stays well inside the channel's 1 MiB line.
MAX_INLINE_REPORT_BYTES = 256 * 1024
# A configuration object (connect_configuration) is a task parameter: past this size it
# is refused with the fix (an artifact), as every clone and run carries its parameters.
MAX_CONFIGURATION_BYTES = 256 * 1024
# Artifact previews (the text `hpo task artifacts` and the web view show), cut here.
MAX_ARTIFACT_PREVIEW_CHARS = 2048
# Under an agent, the script checks this often that its agent is alive (an orphan would
# compute for nobody); a getppid() call, so cheap.
PARENT_WATCH_S = 0.5
# Connecting to the agent's report channel (a local socket): instant unless the agent
# is gone, and then the script goes on without reports rather than hang.
CHANNEL_CONNECT_TIMEOUT_S = 5.0
# An agent fetching a task's repository (a first clone of a large one) or checking out a
# commit: minutes at most; a stuck remote must not hold the slot for ever.
CHECKOUT_TIMEOUT_S = 300.0
# Reading the git state of a script run by hand: a slow network filesystem must not
# delay Task.init for long.
GIT_TIMEOUT_S = 5.0

# Before an optimization starts, the broker must answer one connection within this: a
# local or LAN broker answers in milliseconds; a closed port refuses at once.
BROKER_CHECK_TIMEOUT_S = 5.0
# Publishing a message retries a broker that blinks (a reconnect, a failover) a few
# times within about two seconds, then says the broker is down.
PUBLISH_RETRY_POLICY = {"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5}

# ----- the controller -----------------------------------------------------------------

# The controller is woken when a job of its optimization ends or reports, or a stop is
# asked (hpo.wakeups: PostgreSQL NOTIFY, a doorbell beside a SQLite store), and cycles
# (limits, reports, launches) at least this often anyway: a wake-up that is lost (a
# reconnect, a full socket buffer) delays a trial by at most a second, and time limits,
# the agent watch and the reaper (periods of seconds) are checked often enough.
CONTROLLER_FALLBACK_POLL_S = 1.0
# Where no wake-up can be set up (an in-memory store, a folder it cannot write), one
# cycle this often: a report is acted on within 0.1 s, and a cycle reads only the active
# jobs, so it costs little.
CONTROLLER_POLL_S = 0.1
# How long the store or broker may fail before the optimization gives up: a database
# restart, a failover or a network blip takes far less, and an outage of minutes must
# end with every result, not a dead run (docs/reliability.md).
FAULT_TOLERANCE_S = 600.0
# An optimization whose first 3 finished jobs all lack the objective stops (fail_fast):
# one bad job is bad luck, three in a row at the start are a mistake in the script or
# the objective's name; waiting longer burns the budget, stopping sooner misfires.
FAIL_FAST_JOBS = 3
# A grid over N times more combinations than total_max_jobs (N above this) is said so at
# the start: its jobs walk the grid in order and differ only in its last parameters.
# Twice: half a grid may be a deliberate first pass; less is rarely what was meant.
GRID_COVERAGE_WARN_RATIO = 2
# Jobs queued this long with no live agent serving their queue: the controller says so
# (a start takes a second or two, so 3 s is no false alarm), checks every 5 s whether
# one came, and repeats itself once a minute while none does.
NO_AGENT_NOTICE_S = 3.0
NO_AGENT_CHECK_S = 5.0
NO_AGENT_REPEAT_S = 60.0
# After a failed cycle, wait this long before the next: retrying at once would only
# hammer a store that is away.
CYCLE_RETRY_S = 1.0
# A cycle asks the strategy for new trials for at most about this long, so that a slow
# model-based strategy does not stop the loop from watching reports and limits.
LAUNCH_SLICE_S = 0.05
# After a budget ends, how long to wait for stopped jobs to report their end: GRACE_S
# plus the time for the agent to see the stop and record the outcome, with margin.
STOP_WAIT_S = 60.0
# Local agents (start_locally, --local-agents) must register within this: they start a
# Python process each, seconds on a loaded machine.
LOCAL_AGENTS_START_TIMEOUT_S = 60.0
# ... and beat faster than remote ones, and shut down sooner: they live as long as one
# optimization, on the machine that waits for them.
LOCAL_AGENT_HEARTBEAT_S = 1.0
LOCAL_AGENT_SHUTDOWN_TIMEOUT_S = 5.0
LOCAL_AGENTS_STOP_TIMEOUT_S = 30.0
# After a second Ctrl-C the user wants out: local agents get this long to stop (the
# optimization stays running in the store; `resume` continues it).
LOCAL_AGENTS_QUIT_TIMEOUT_S = 5.0
# Waiting with a timeout for a local agent forked from the controller (no Popen to do
# it): polled, as Popen.wait polls, from this delay doubling up to the second.
FORKED_AGENT_WAIT_FIRST_S = 0.001
FORKED_AGENT_WAIT_MAX_S = 0.05

# ----- hpo-controller's display (start, resume) ----------------------------------------

# How often the display looks at the controller it runs with (same process: cheap).
DISPLAY_POLL_S = 0.5
# The store is read at least this often while nothing changes (running jobs' clocks) ...
DISPLAY_REREAD_S = 2.0
# ... but never sooner than this many times its last read's duration after it: on a
# large optimization the display takes at most 1/(1+4) = 20 % of the store's time.
DISPLAY_READ_SHARE = 4
# A plain progress line (not a terminal) at most this often, and on every job end: a
# log of a long optimization stays readable ...
PLAIN_LINE_PERIOD_S = 5.0
# ... and at least this often when nothing changed, so the log shows it is alive.
PLAIN_LINE_QUIET_S = 60.0

# ----- the web view -------------------------------------------------------------------

# A running optimization's page is redrawn at least this often (its clocks move).
UI_CLOCK_S = 10.0
# A live view whose answer took t seconds to build is built again at most every
# UI_REBUILD_SHARE * t seconds: at most 1/(UI_REBUILD_SHARE + 1) of a core per view,
# however many browsers poll it.
UI_REBUILD_SHARE = 4
# Its login (hpo.ui.auth), required beyond loopback: the token, or a file that holds it
# (never a command-line flag: `ps` shows those), and more Host names to answer to.
ENV_UI_TOKEN = "HPO_UI_TOKEN"
ENV_UI_TOKEN_FILE = "HPO_UI_TOKEN_FILE"
ENV_UI_ALLOWED_HOSTS = "HPO_UI_ALLOWED_HOSTS"  # comma-separated, as --allowed-host
UI_SESSION_S = 12 * 3600.0  # a browser logs in again after this (absolute, not idle)
# A client that fails this many logins within the window is refused until it passes;
# each failure is answered after a delay, so guessing is slow even below the limit.
UI_LOGIN_FAILURES = 10
UI_LOGIN_WINDOW_S = 300.0
UI_LOGIN_FAIL_DELAY_S = 1.0

# ----- input limits (hpo.limits checks them, once, before anything is written) ---------

# Names are stored in varchar columns (hpo/store/schema.py): a longer one would pass a
# check made without them and fail on PostgreSQL at the first write, a minute into an
# optimization. Only printable characters: a newline in a name forges log lines.
MAX_PROJECT_LEN = 255  # hpo_tasks.project
MAX_TASK_NAME_LEN = 512  # hpo_tasks.name
MAX_QUEUE_LEN = 255  # hpo_tasks.queue
MAX_AGENT_NAME_LEN = 255  # hpo_workers.name, hpo_tasks.worker
MAX_METRIC_LEN = 255  # hpo_scalars.title and series: an objective's title and series
# A hyper-parameter's name (``Section/name``): kept in JSON, but shown in every table
# and in the clone's name, so as short as a metric's.
MAX_PARAMETER_NAME_LEN = 255
# A task id is uuid4 hex, 32 characters (hpo_tasks.id); a unique prefix of 4 or more
# names one too. Anything else is no id, answered without a query.
TASK_ID_LEN = 32
MIN_TASK_ID_PREFIX = 4
# Counts (jobs, iterations, retries, list lengths) end in INTEGER columns, 32 bits on
# PostgreSQL, or in SQL LIMITs: a larger one is a typo that fails late.
MAX_COUNT = 2**31 - 1
# Slots of one agent (one thread and one process each) and local agents of one
# optimization (one process each): more is a typo, not a machine.
MAX_SLOTS = 1024
MAX_GPU_INDEX = 1023
# Durations (seconds) up to about 30 years: a longer one is a typo, and a timer of more
# than threading.TIMEOUT_MAX (about 290 years) raises OverflowError where it is waited.
MAX_SECONDS = 1e9
# The shortest period of an agent loop that writes to the store (heartbeat, resource
# sampling): each beat is a write, and 0 is a busy loop.
MIN_PERIOD_S = 0.1
# Output stored per task, in MB: a terabyte is past any database's taste.
MAX_LOG_MB_LIMIT = 1_000_000.0
MAX_PORT = 65535
# hpo.yaml: a settings file is a few kilobytes. The caps stop a hostile or broken file
# before it costs memory or time: a file-size cap, a nesting cap (the YAML composer
# recurses once per level: 5,000 levels is a RecursionError), and a cap on the nodes
# the document holds once every alias is expanded (a "billion laughs" file is 1 KB of
# aliases that expand to 10^9 values, which a later check would walk one by one).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
MAX_YAML_NODES = 100_000
# Range bounds: a float bound past 1e300 makes the width of the range overflow to
# infinity; an integer past 2**53 is no longer exact as the float every strategy
# samples with (10**400 overflowed a float conversion deep in a strategy).
MAX_FLOAT_BOUND = 1e300
MAX_INT_BOUND = 2**53
# File paths (a script, hpo.yaml, a working directory): Linux's PATH_MAX and NAME_MAX.
# A longer one is "File name too long" (OSError) from the first stat, not an answer.
MAX_PATH_LEN = 4096
MAX_FILE_NAME_LEN = 255

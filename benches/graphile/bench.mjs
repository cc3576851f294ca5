// graphile-worker's side of the queue comparison (benches/compare-queue runs it): the same
// measurements as `cargo bench --bench queue`, on the same PostgreSQL server, in a scratch
// database of its own. Prints one `RESULT system=... test=... key=value` line per measurement.
//
// node bench.mjs --url postgres://... [--jobs 20000] [--concurrency 16] [--latency-jobs 1000]
//   [--latency-gap-ms 5] [--single-enqueues 2000] [--database graphile_bench]
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { makeWorkerUtils, run, runMigrations } from "graphile-worker";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, arg, i, all) => {
    if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
    return pairs;
  }, []),
);
const baseUrl = args.url ?? process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const jobs = Number(args.jobs ?? 20000);
const concurrency = Number(args.concurrency ?? 16);
const latencyJobs = Number(args["latency-jobs"] ?? 1000);
const latencyGap = Number(args["latency-gap-ms"] ?? 5);
const singles = Number(args["single-enqueues"] ?? 2000);
const database = args.database ?? "graphile_bench";

const url = new URL(baseUrl);
const admin = new pg.Client({ connectionString: baseUrl.replace(url.pathname, "/postgres") });
await admin.connect();
await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
await admin.query(`CREATE DATABASE "${database}"`);
await admin.end();
url.pathname = `/${database}`;
const connectionString = url.toString();

const silent = { scope: () => silent, debug() {}, info() {}, warn() {}, error() {} };
import { Logger } from "graphile-worker";
const logger = new Logger(() => () => {});

await runMigrations({ connectionString, logger });
const utils = await makeWorkerUtils({ connectionString, logger });
const pool = new pg.Pool({ connectionString, max: 4 });

const result = (system, test, key, value) =>
  console.log(`RESULT system=${system} test=${test} ${key}=${value.toFixed(3)}`);
const rows = [];
const row = (what, system, test, key, value, unit) => {
  rows.push({ what, system, value, unit });
  result(system, test, key, value);
};
const remaining = async () =>
  Number((await pool.query("SELECT count(*) FROM graphile_worker._private_jobs")).rows[0].count);

// Enqueue, one call (one transaction) per job.
let started = performance.now();
for (let i = 0; i < singles; i++) await utils.addJob("noop", {});
row(`enqueue, one call per job (${singles} jobs)`, "graphile-worker", "enqueue", "single_jobs_per_s",
  singles / ((performance.now() - started) / 1000), "jobs/s");
await pool.query("DELETE FROM graphile_worker._private_jobs");

// Enqueue in batches of 1000 (addJobs: one statement per batch).
const batch = Array.from({ length: 1000 }, () => ({ identifier: "noop", payload: {} }));
const enqueueAll = async () => {
  for (let done = 0; done < jobs; done += 1000) {
    await utils.addJobs(batch.slice(0, Math.min(1000, jobs - done)));
  }
};
started = performance.now();
await enqueueAll();
row(`enqueue, addJobs batches of 1000 (${jobs} jobs)`, "graphile-worker", "enqueue", "batched_jobs_per_s",
  jobs / ((performance.now() - started) / 1000), "jobs/s");

// Drain: all jobs queued, time from starting the worker until the last one completed.
async function drain(system, worker) {
  if ((await remaining()) === 0) await enqueueAll();
  let completed = 0;
  let finished;
  const allDone = new Promise((resolve) => (finished = resolve));
  const taskList = {
    noop: async () => {
      completed += 1;
    },
  };
  const t0 = performance.now();
  const runner = await run({
    connectionString, concurrency, noHandleSignals: true, pollInterval: 1000, logger, taskList,
    preset: { worker },
  });
  runner.events.on("job:complete", () => {
    if (completed >= jobs) finished();
  });
  await allDone;
  // Completions may be batched: wait for the rows to be gone.
  while ((await remaining()) > 0) await sleep(5);
  const rate = jobs / ((performance.now() - t0) / 1000);
  await runner.stop();
  row(`drain ${jobs} no-op jobs, concurrency ${concurrency}`, system, "drain", `c${concurrency}_jobs_per_s`, rate, "jobs/s");
}
await drain("graphile-worker-localqueue", { localQueue: { size: 160 }, completeJobBatchDelay: 0 });
await drain("graphile-worker", {});

// Pickup latency into an idle queue: submission (just before addJob) to the task starting.
{
  const latencies = [];
  const taskList = {
    noop: async (payload) => {
      latencies.push(performance.now() - payload.t);
    },
  };
  const runner = await run({
    connectionString, concurrency: 16, noHandleSignals: true, pollInterval: 1000, logger, taskList,
  });
  await sleep(500);
  for (let i = 0; i < latencyJobs; i++) {
    await utils.addJob("noop", { t: performance.now() });
    await sleep(latencyGap);
  }
  while (latencies.length < latencyJobs) await sleep(5);
  await runner.stop();
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))];
  row("pickup latency p50", "graphile-worker", "pickup", "p50_ms", at(0.5), "ms");
  row("pickup latency p99", "graphile-worker", "pickup", "p99_ms", at(0.99), "ms");
  row("pickup latency max", "graphile-worker", "pickup", "max_ms", latencies[latencies.length - 1], "ms");
}

console.log("\n| measurement | system | value |\n| --- | --- | ---: |");
for (const r of rows) console.log(`| ${r.what} | ${r.system} | ${r.value.toFixed(1)} ${r.unit} |`);
await pool.end();
await utils.release();

"""Rollout generation on the checkpoint's vLLM engine: the GPU-bound steps of an audit (pool ``gpu``)."""


from dagster import AssetExecutionContext, MaterializeResult, asset

from assets.partitions import checkpoint_partitions
from assets.tracking import audit_step, md_mapping, md_table
from fixability_dag.pipeline import audit
from fixability_dag.pipeline.config import CODE_VERSION
from resources import AuditSettings, ResultsDatabase, RolloutEngineResource

GPU_POOL = "gpu"
# One GPU per rollout step pod when the audit runs on the k8s_job_executor (FIXABILITY_EXECUTOR=k8s; see deploy/k8s/).
# It has to sit on the ops: job-level dagster-k8s/config tags reach only the run pod. Other executors ignore it.
GPU_STEP_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"requests": {"nvidia.com/gpu": "1"},
                                                                          "limits": {"nvidia.com/gpu": "1"}}}}}


@asset(partitions_def=checkpoint_partitions, group_name="audit", code_version=CODE_VERSION, pool=GPU_POOL,
       op_tags=GPU_STEP_TAGS, deps=["problem_set"], kinds={"vllm", "sql"})
def base_rollouts(context: AssetExecutionContext, vllm: RolloutEngineResource, database: ResultsDatabase,
                  settings: AuditSettings) -> MaterializeResult:
    """N samples per problem at the base decoding (one request per problem, ``n`` shared-prefix samples)."""
    with audit_step(context, database, settings) as step:
        engine = vllm.engine(step.checkpoint_path())
        summary = audit.diagnose(step.store, engine, step.checkpoint_id, step.config, step.run_id)
        step.rows, step.summary = summary["rollouts"], summary
    return MaterializeResult(metadata={
        "rollouts": summary["rollouts"],
        "pass_rate": summary["pass_rate"],
        "failed_problems": summary["failed_problems"],
        "solved_by_most / few / none": f"{summary['solved_by_most']} / {summary['solved_by_few']} / {summary['solved_by_none']}",
        "generated_tokens": summary["generated_tokens"],
        "requests kept / generated": f"{summary['kept_requests']} / {summary['generated_requests']}",
        "pass_rate_by_difficulty": md_mapping(summary["pass_rate_by_difficulty"], "difficulty", "pass rate"),
    })


@asset(partitions_def=checkpoint_partitions, group_name="audit", code_version=CODE_VERSION, pool=GPU_POOL,
       op_tags=GPU_STEP_TAGS, deps=[base_rollouts], kinds={"vllm", "sql"})
def probe_rollouts(context: AssetExecutionContext, vllm: RolloutEngineResource, database: ResultsDatabase,
                   settings: AuditSettings) -> MaterializeResult:
    """A small probe batch per failed problem under the cheapest bounded intervention (for probe shift)."""
    with audit_step(context, database, settings) as step:
        engine = vllm.engine(step.checkpoint_path())
        summary = audit.probe(step.store, engine, step.checkpoint_id, step.config, step.run_id)
        step.rows, step.summary = summary["rollouts"], summary
    return MaterializeResult(metadata={k: v for k, v in summary.items()})


@asset(partitions_def=checkpoint_partitions, group_name="audit", code_version=CODE_VERSION, pool=GPU_POOL,
       op_tags=GPU_STEP_TAGS, deps=[base_rollouts], kinds={"vllm", "sql"})
def rescue_rollouts(context: AssetExecutionContext, vllm: RolloutEngineResource, database: ResultsDatabase,
                    settings: AuditSettings) -> MaterializeResult:
    """Every catalog intervention on every failed problem with fresh seeds: the measured rescues behind the
    ground-truth regimes. Outcomes per (problem, intervention) land in ``intervention_outcomes``."""
    with audit_step(context, database, settings) as step:
        engine = vllm.engine(step.checkpoint_path())
        outcomes = audit.measure_rescues(step.store, engine, step.checkpoint_id, step.config, step.run_id)
        table = (outcomes.groupby("intervention")
                 .agg(problems=("problem_id", "size"), rescued=("rescued", "sum"), majority_correct=("majority_correct", "sum"),
                      samples=("samples", "sum"), tokens=("tokens", "sum")).reset_index())
        step.rows = int(outcomes["samples"].sum()) if len(outcomes) else 0
        step.summary = {"by_intervention": table.to_dict("records"), **outcomes.attrs}
    return MaterializeResult(metadata={
        "rollouts": step.rows, "rescues_by_intervention": md_table(table),
        "requests kept / generated": f"{outcomes.attrs['kept_requests']} / {outcomes.attrs['generated_requests']}",
    })

-- Example queries against the results database; they run unchanged on SQLite and PostgreSQL.
--   sqlite3 -header -column .fixability/audit.db < docs/example_queries.sql
--   psql "$PG_URL" -f docs/example_queries.sql

-- 1. Failure topography: regime shares of failed problems per checkpoint. In production mode only the label
--    subsample has a regime (labelled < failed): the shares are then its weighted (Hajek) estimates of all failed
--    problems' shares, as the failure_topography asset gives them (with intervals there).
SELECT c.checkpoint_id, c.recipe, c.training_step AS step, COUNT(*) AS failed,
       SUM(CASE WHEN l.true_regime IS NOT NULL THEN 1 ELSE 0 END) AS labelled,
       ROUND(CAST(SUM(CASE WHEN l.true_regime = 'retry_recoverable' THEN COALESCE(l.label_weight, 1.0) ELSE 0 END)
                  / SUM(CASE WHEN l.true_regime IS NOT NULL THEN COALESCE(l.label_weight, 1.0) END) AS NUMERIC), 3) AS retry_recoverable,
       ROUND(CAST(SUM(CASE WHEN l.true_regime = 'steerable_hard' THEN COALESCE(l.label_weight, 1.0) ELSE 0 END)
                  / SUM(CASE WHEN l.true_regime IS NOT NULL THEN COALESCE(l.label_weight, 1.0) END) AS NUMERIC), 3) AS steerable_hard,
       ROUND(CAST(SUM(CASE WHEN l.true_regime = 'structural' THEN COALESCE(l.label_weight, 1.0) ELSE 0 END)
                  / SUM(CASE WHEN l.true_regime IS NOT NULL THEN COALESCE(l.label_weight, 1.0) END) AS NUMERIC), 3) AS structural
FROM regime_labels l JOIN checkpoints c ON c.checkpoint_id = l.checkpoint_id
GROUP BY c.checkpoint_id, c.recipe, c.training_step
ORDER BY c.recipe DESC, c.training_step;

-- 2. Which intervention rescues the steerable-hard problems of each checkpoint (label phase, fresh seeds).
SELECT o.checkpoint_id, o.intervention,
       SUM(CASE WHEN o.rescued THEN 1 ELSE 0 END) AS rescued, COUNT(*) AS problems, SUM(o.tokens) AS tokens
FROM intervention_outcomes o
JOIN regime_labels l ON l.checkpoint_id = o.checkpoint_id AND l.suite = o.suite AND l.problem_id = o.problem_id
WHERE l.true_regime = 'steerable_hard' AND o.intervention <> 'retry'
GROUP BY o.checkpoint_id, o.intervention
ORDER BY o.checkpoint_id, rescued DESC, tokens;

-- 3. Routed plan vs. the other policies on fresh seeds, all failed problems, at equal samples; policy_tokens includes
--    probes and label phase.
SELECT checkpoint_id, policy, problems, rescued, ROUND(CAST(rescue_rate AS NUMERIC), 3) AS rescue_rate, policy_tokens,
       ROUND(CAST(compute_saved_vs_retry AS NUMERIC), 3) AS compute_saved
FROM rescue_evaluations
WHERE regime = 'all' AND matching = 'samples'
ORDER BY checkpoint_id, policy;

-- 4. The same policies against uniform retry given their whole cost in generated tokens (retry_samples a problem).
SELECT checkpoint_id, policy, policy_tokens, retry_samples, token_match_capped AS capped, rescued, baseline_rescued,
       ROUND(CAST(lift_vs_retry AS NUMERIC), 3) AS lift, ROUND(CAST(lift_ci_low AS NUMERIC), 3) AS lift_low,
       ROUND(CAST(lift_ci_high AS NUMERIC), 3) AS lift_high
FROM rescue_evaluations
WHERE regime = 'all' AND matching = 'tokens'
ORDER BY checkpoint_id, policy;

-- 5. What each checkpoint's audit cost, per phase and intervention: generated tokens, and prompt tokens (a request's
--    prompt counted once for its n samples; NULL rows counted apart: stored before prompts were counted).
SELECT checkpoint_id, phase, intervention, COUNT(*) AS rollouts, SUM(num_tokens) AS generated_tokens,
       SUM(prompt_tokens) AS prompt_tokens, SUM(CASE WHEN prompt_tokens IS NULL THEN 1 ELSE 0 END) AS prompt_unknown
FROM rollouts
GROUP BY checkpoint_id, phase, intervention
ORDER BY checkpoint_id, phase, intervention;

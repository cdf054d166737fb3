#!/usr/bin/env bash
# The paper-budget trainability campaign: the paper's Table 1 at 100 epochs (scaled to the 8k/2k MNIST split), the
# very deep He nets and the alternatives, as two sequential lanes (one thread each): lane 1 is Table 1 (PyTorch init,
# depths 10-50) and its levers, lane 2 the very deep nets, the plain-loop cross-check and the alternatives.
# Every run appends to docs/results/trainability_budget.json and is skipped when already there; an unfinished run
# resumes from its last complete checkpoint in runs/trainability/. Restart the whole queue after a kill with:
#
#   nohup setsid bash scripts/benchmarks/campaign_budget.sh >> runs/campaign.log 2>&1 &
#
# LANES="1 2" (the default) runs both lanes at once, the most the 2-core machine takes; LANES=1 or LANES=2 runs one.
# Stop it with `kill -- -PID` (PID: the first campaign_budget.sh process; setsid makes it the group leader), which
# ends its lanes and their runs together; each run then resumes from its last checkpoint on the next start.
# Then `python scripts/benchmarks/trainability.py --report` writes docs/trainability.md from the JSON.
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
T="python scripts/benchmarks/trainability.py --datasets mnist --width 256 --batch_size 512 --lrs 1e-3 --threads 1
   --run_dir runs/trainability --results docs/results/trainability_budget.json --probes_dir runs/trainability_probes"

lane1() {
  # (o) The recipe that rescued depth 30 and 50 (lr 1e-3 decayed linearly, no clipping: configs/vision/fnn_mnist.yaml)
  #     on the rest of Table 1: PyTorch init at depth 20 and 40, He init at depth 30 and 50, LBE defaults on seeds 0-2
  #     and plain on seed 0; then full Fashion-MNIST (60k / 10k) at depth 50 for 20 epochs (2,360 steps).
  R="--epochs 100 --max_grad_norm 0 --lr_scheduler linear"
  $T --inits torch --depths 20 40 --seeds 0 1 2 $R --lbe_settings default
  $T --inits torch --depths 20 40 --seeds 0 $R --lbe_settings plain
  $T --inits he --depths 30 50 --seeds 0 1 2 $R --lbe_settings default
  $T --inits he --depths 30 50 --seeds 0 $R --lbe_settings plain

  # (g') The alternatives on the same recipe at depth 50: orthogonal (gain sqrt 2) and LSUV init, plain and with LBE,
  #     and the residual net (x + f(x), He init) as the architectural ceiling; seed 0 first, then seeds 1-2.
  $T --inits orthogonal lsuv --depths 50 --seeds 0 $R --lbe_settings plain default
  $T --inits he --residual --depths 50 --seeds 0 $R --lbe_settings plain default
  #     (f'') The port's settings took He depth 200 from chance to 82.0 % (lane 2), with swings of tens of points
  #     between evaluations as at a constant lr 1e-3: the same with the lr decayed linearly.
  $T --inits he --depths 200 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lr_scheduler linear \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  $T --datasets fashion --inits torch --depths 50 --seeds 0 --epochs 20 --max_grad_norm 0 --lr_scheduler linear \
     --lbe_settings default plain
  #     (f'') More seeds of the port's settings on He depth 100 (93.7 % on seed 0 by step 1,120).
  $T --inits he --depths 100 --seeds 1 2 --epochs 100 --max_grad_norm 1 --lrs 1e-4 \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  #     A second seed of the port's settings with linear decay on He depth 200.
  $T --inits he --depths 200 --seeds 1 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lr_scheduler linear \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  #     The port's 500-layer settings (below, lane 2) left chance at 100 epochs (48.8 %, still rising): the
  #     same run for 300 epochs (4,800 steps; the port trained about 5,900).
  $T --inits torch --depths 500 --width 128 --seeds 0 --epochs 300 --max_grad_norm 1 --lrs 1e-4 \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  #     He init with linear decay took depth 500 (width 128) to 67.5 % at 100 epochs, its curve flattening as the
  #     lr decayed: the same for 300 epochs.
  $T --inits he --depths 500 --width 128 --seeds 0 --epochs 300 --max_grad_norm 1 --lrs 1e-4 --lr_scheduler linear \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  #     Plain Trainer on that net and optimisation at 100 epochs (at lr 1e-4 with clipping plain He depth 100 trains).
  $T --inits he --depths 500 --width 128 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lr_scheduler linear \
     --lbe_settings plain
  #     At lr 1e-4 with clipping plain He depth 100 trains (92.0 %): the very-deep settings at lr 1e-3, where plain
  #     He depth 100 and 200 stay at chance.
  $T --inits he --depths 100 200 --seeds 0 --epochs 100 --max_grad_norm 1 --lr_scheduler linear \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  $T --inits orthogonal lsuv --depths 50 --seeds 1 2 $R --lbe_settings plain default
  $T --inits he --residual --depths 50 --seeds 1 2 $R --lbe_settings plain default

  # (a) Table 1 at its budget: PyTorch-default init (the authors' code) depth 30 and 50, 100 epochs, Trainer's
  #     clipping 1.0, constant lr; plain Trainer vs LBETrainer with BatchEntropyConfig() defaults, seeds 0-2.
  $T --inits torch --depths 30 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lbe_settings plain default

  # (b) The same nets with the alpha/beta of configs/vision/fnn_mnist.yaml (the authors' grid point: alpha 0.5,
  #     beta 1e-3 at depth 30, beta 5e-4 at depth 50); the plain arm is (a)'s.
  $T --inits torch --depths 30 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lbe_settings alpha=0.5,beta=0.001
  $T --inits torch --depths 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lbe_settings alpha=0.5,beta=0.0005

  # (d) (a) without clipping (the paper's optimisation: what the 600-step sweep used).
  $T --inits torch --depths 30 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 0 --lbe_settings plain default

  # (j) Levers on (a)'s nets, whose accuracy curves swing by tens of points between evaluations at lr 1e-3: a 10x
  #     smaller lr (the authors' sweep ran 3e-5 to 1e-4), with and without clipping; lr 1e-3 decayed linearly to 0
  #     (Trainer's default schedule); and the authors' lr 5e-5 at the paper's number of steps (600 epochs of the 8k
  #     split = 9,600 steps, as 100 epochs of their 48k split).
  $T --inits torch --depths 30 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lbe_settings default
  $T --inits torch --depths 50 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lbe_settings plain

  # (l) At lr 1e-4 the rescued nets fit the 8k training images (99 %) and test at 83-85 %: the authors' training
  #     augmentation (random affine, brightness/contrast; they train on 50k augmented images) against that gap.
  $T --inits torch --depths 30 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --augment \
     --lbe_settings default
  $T --inits torch --depths 50 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --augment --lbe_settings plain

  # (j, continued) lr 1e-3 decayed linearly to 0 (Trainer's default schedule) against the late swings, without
  #     clipping and with Trainer's clipping (linear decay + clipping 1.0: Trainer's defaults as they come).
  $T --inits torch --depths 30 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 0 --lr_scheduler linear \
     --lbe_settings default
  $T --inits torch --depths 30 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lr_scheduler linear \
     --lbe_settings default
  $T --inits torch --depths 50 --seeds 0 --epochs 100 --max_grad_norm 1 --lr_scheduler linear --lbe_settings plain
  $T --inits torch --depths 30 50 --seeds 0 --epochs 100 --max_grad_norm 0 --lr_scheduler linear --lbe_settings plain

  # (i) Beyond the paper: the joint Gaussian entropy (BatchEntropyConfig(entropy_estimator="joint"), which sees
  #     correlated neurons) on the nets of (a), defaults otherwise and with the authors' beta at depth 50.
  $T --inits torch --depths 30 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lbe_settings entropy_estimator=joint

  # (j, continued) the other levers.
  $T --inits torch --depths 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 0 --lrs 1e-4 --lbe_settings default
  $T --inits torch --depths 50 --seeds 0 1 2 --epochs 600 --max_grad_norm 1 --lrs 5e-5 --lbe_settings default

  # (e) The rest of Table 1's depths, PyTorch-default init, clipping 1.0.
  $T --inits torch --depths 10 20 40 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lbe_settings plain default

  # (j, continued) a linear warm-up over the first 5 % under Trainer's clipping, lr 1e-3.
  $T --inits torch --depths 30 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --warmup_ratio 0.05 \
     --lbe_settings default

  # (i, continued) the joint entropy with the authors' beta at depth 50.
  $T --inits torch --depths 50 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 \
     --lbe_settings alpha=0.5,beta=0.0005,entropy_estimator=joint
}

lane2() {
  # (f') He depth 500 with clipping and linear decay first (without clipping the loss reached 1e8 by step 80); then
  #     the alternatives of (g') at depth 100 on the recipe, seed 0; more seeds of He depth 100 on the recipe
  #     (82.7 % on seed 0); width 128 at depth 100 and 200.
  R="--epochs 100 --max_grad_norm 0 --lr_scheduler linear"
  $T --inits he --depths 500 --seeds 0 --epochs 100 --max_grad_norm 1 --lr_scheduler linear --lbe_settings default
  #     The settings of the TensorFlow port's 500-layer runs (lr 1e-4, clipping 1.0, beta 1.5, initial alpha 3.0,
  #     alpha_min 0.3, width 128; it used Glorot init, whose signal vanishes with depth as PyTorch's default does).
  $T --inits torch --depths 500 --width 128 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  #     The same settings on He depth 200, width 256 (chance with the defaults on either schedule).
  $T --inits he --depths 200 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  #     Plain Trainer on the port's 500-layer net and optimisation.
  $T --inits torch --depths 500 --width 128 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lbe_settings plain
  #     The port's settings on He depth 100 (82.7 % with the defaults on the recipe).
  $T --inits he --depths 100 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  $T --inits orthogonal lsuv --depths 100 --seeds 0 $R --lbe_settings plain default
  $T --inits he --residual --depths 100 --seeds 0 $R --lbe_settings plain default
  #     The third seed of the port's settings with linear decay on He depth 200.
  $T --inits he --depths 200 --seeds 2 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lr_scheduler linear \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  #     Depth 500 with the port's settings: He init at width 128 with the linear decay that took He depth 200 to
  #     89 %; the Glorot init the port ran; the PyTorch-init net of the port with a linear warm-up over the first 5 %;
  #     then He init at width 256.
  $T --inits he --depths 500 --width 128 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lr_scheduler linear \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  #     The port's own init (Glorot uniform, Keras' default) on its 500-layer net.
  $T --inits glorot --depths 500 --width 128 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  $T --inits torch --depths 500 --width 128 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --warmup_ratio 0.05 \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  #     Plain Trainer on the optimisation of the port's settings at He depth 100 and 200 (does the lower lr alone
  #     train them?); depth 500 is in lane 1.
  $T --inits he --depths 100 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lbe_settings plain
  $T --inits he --depths 200 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lr_scheduler linear \
     --lbe_settings plain
  $T --inits he --depths 200 --seeds 0 --epochs 100 --max_grad_norm 1 --lr_scheduler linear --lbe_settings plain
  $T --inits he --depths 500 --seeds 0 --epochs 100 --max_grad_norm 1 --lrs 1e-4 --lr_scheduler linear \
     --lbe_settings alpha=3.0,beta=1.5,alpha_min=0.3
  $T --inits he --depths 100 --seeds 1 2 $R --lbe_settings default
  $T --inits he --depths 100 200 --width 128 --seeds 0 $R --lbe_settings default
  $T --inits he --depths 100 --width 128 --seeds 0 $R --lbe_settings plain

  # (c) Healthy nets: He init depth 10 and 20, plain vs LBE defaults (target: LBE within 1 point of plain).
  $T --inits he --depths 10 20 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lbe_settings plain default

  # (h) LBETrainer vs the plain-PyTorch loop of eq. 3-6 on He depth 100 at the 600-step budget without clipping
  #     (where one seed gave 9.9% vs 42.5%), seeds 0-4, both batch orders of the loop.
  $T --inits he --depths 100 --seeds 0 1 2 3 4 --steps 600 --max_grad_norm 0 --lbe_settings default \
     --results docs/results/trainability_reference_compare.json
  R="python scripts/benchmarks/reference_loop.py --dataset mnist --depth 100 --init he --steps 600 --threads 1"
  $R --seeds 0 1 2 3 4 --batches epoch --results docs/results/reference_loop_he100.jsonl
  $R --seeds 0 1 2 3 4 --batches replacement --results docs/results/reference_loop_he100.jsonl

  # (f) Very deep: He init depth 100, 200 and 500 with clipping, 100 epochs: LBE defaults on one seed at every
  #     depth first, then plain (at chance at all three depths in the 600-step sweep), then more seeds.
  $T --inits he --depths 100 200 --seeds 0 --epochs 100 --max_grad_norm 1 --lbe_settings default
  #     The schedule that rescued the PyTorch-init nets (linear decay; without and with clipping) at depth 100.
  $T --inits he --depths 100 --seeds 0 --epochs 100 --max_grad_norm 0 --lr_scheduler linear --lbe_settings default
  $T --inits he --depths 100 --seeds 0 --epochs 100 --max_grad_norm 1 --lr_scheduler linear --lbe_settings default
  #     Linear decay without clipping (He depth 100: 82.7 % against 53.8 % at a constant lr with clipping) at depth
  #     200, then plain on the same schedule; depth 500 with clipping first (without it the loss reached 1e8 by step
  #     80), linear and constant, then without clipping.
  $T --inits he --depths 200 --seeds 0 --epochs 100 --max_grad_norm 0 --lr_scheduler linear --lbe_settings default
  $T --inits he --depths 100 --seeds 0 --epochs 100 --max_grad_norm 0 --lr_scheduler linear --lbe_settings plain
  $T --inits he --depths 500 --seeds 0 --epochs 100 --max_grad_norm 1 --lr_scheduler linear --lbe_settings default
  $T --inits he --depths 500 --seeds 0 --epochs 100 --max_grad_norm 1 --lbe_settings default
  $T --inits he --depths 500 --seeds 0 --epochs 100 --max_grad_norm 0 --lr_scheduler linear --lbe_settings default
  $T --inits he --depths 100 200 500 --seeds 0 --epochs 100 --max_grad_norm 1 --lbe_settings plain
  $T --inits he --depths 100 --seeds 1 2 --epochs 100 --max_grad_norm 1 --lbe_settings default plain

  # (m) Table 1's He column: He init at depth 30, 40 and 50, plain vs LBE defaults, clipping 1.0.
  $T --inits he --depths 30 50 40 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lbe_settings plain default

  # (k) Full Fashion-MNIST (60k / 10k) at depth 50, PyTorch init, clipping 1.0, 20 epochs (2,360 steps).
  $T --datasets fashion --inits torch --depths 50 --seeds 0 --epochs 20 --max_grad_norm 1 --lbe_settings default plain

  # (n) The very deep nets at width 128 (the issue's second width), one seed.
  $T --inits he --depths 100 200 500 --width 128 --seeds 0 --epochs 100 --max_grad_norm 1 --lbe_settings default plain

  # (g) The alternatives on the same budget: orthogonal (gain sqrt 2) and LSUV init, plain and with LBE, and the
  #     residual net (x + f(x), He init) as the architectural ceiling, at depth 50 and 100.
  $T --inits orthogonal lsuv --depths 50 100 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lbe_settings plain default
  $T --inits he --residual --depths 50 100 --seeds 0 1 2 --epochs 100 --max_grad_norm 1 --lbe_settings plain default
}

for lane in ${LANES:-1 2}; do "lane$lane" & done
wait

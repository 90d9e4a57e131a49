"""Second CPU-budget reproduction: the demo's image size (256 px, 128 px crops, T1 = 100) so that the NDCT
detector learns, for the cheaper denoisers only (time-boxed session)."""
from src_training.reproduce import ReproBudget, run_reproduction

budget = ReproBudget(image_size=256, crop_size=128, t1=100, t2=30, t3=10, rounds=1, batch_size=4,
                     train_nodules=3, eval_nodules=2, lr_denoiser=5e-4, lr_detector=1e-4, curve_every=10,
                     curve_slices=8, step_scale=(("mapnn", 0.5),))
run_reproduction("/tmp/repro_b", denoisers=["cpce", "wganvgg", "mapnn"], gan_denoisers=["cpce"],
                 fig3_denoiser="cpce", budget=budget, seeds=(0,), device="cpu")

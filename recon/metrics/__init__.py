"""Metrics, each a leaf the stages and the optimiser use: images (PSNR, SSIM, LPIPS, masked), cameras against
known ones, and geometry against ground truth. The evaluation harness that runs whole benchmarks is recon/eval."""

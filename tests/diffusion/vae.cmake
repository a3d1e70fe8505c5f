# vae: diffusers AutoencoderKL against tests/fixtures/diffusion_vae (gen_diffusion_vae.py).
add_executable(test_diffusion_vae ${CMAKE_CURRENT_SOURCE_DIR}/test_vae.c)
target_link_libraries(test_diffusion_vae PRIVATE cmds_difftest cmds_warnings)
cmds_add_test(NAME diffusion.vae COMMAND test_diffusion_vae ${CMDS_FIXTURES}/diffusion_vae LABELS unit diffusion)
# the same on the GPU, and against the CPU path (skips without one)
cmds_add_test(NAME diffusion.vae_cuda COMMAND test_diffusion_vae ${CMDS_FIXTURES}/diffusion_vae --cuda LABELS cuda diffusion)
# benchmark (label bench, not in the default run): the full-size SD VAE (random weights, the
# checkpoint make_full_marigold.py writes once into the build folder), ours vs diffusers.
add_executable(bench_vae ${CMAKE_CURRENT_SOURCE_DIR}/bench_vae.c)
target_link_libraries(bench_vae PRIVATE cmds_difftest cmds_warnings m)
cmds_add_test(NAME diffusion.bench_vae_cpu COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/bench_vae.sh $<TARGET_FILE:bench_vae>
              ${CMAKE_BINARY_DIR}/full_marigold cpu 256 1 LABELS bench diffusion TIMEOUT 1800)
cmds_add_test(NAME diffusion.bench_vae_cuda COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/bench_vae.sh $<TARGET_FILE:bench_vae>
              ${CMAKE_BINARY_DIR}/full_marigold cuda 768 3 LABELS bench diffusion cuda TIMEOUT 1800)

# marigold: the whole normals procedure against diffusers' MarigoldNormalsPipeline
# (gen_diffusion_marigold.py: tiny random checkpoint, the same initial latents).
add_executable(test_marigold ${CMAKE_CURRENT_LIST_DIR}/test_marigold.c)
target_link_libraries(test_marigold PRIVATE cmds_difftest cmds_warnings m)
cmds_add_test(NAME diffusion.marigold COMMAND test_marigold ${CMDS_FIXTURES}/diffusion_marigold LABELS unit diffusion)
# the same on the GPU (cmds-estimate --device cuda), and against the CPU path (skips without one)
cmds_add_test(NAME diffusion.marigold_cuda COMMAND test_marigold ${CMDS_FIXTURES}/diffusion_marigold --cuda
              LABELS cuda diffusion)
# benchmark (label bench, not in the default run): the full-size Marigold normals pipeline at
# processing resolution 768 (random weights made once by make_full_marigold.py into the build
# folder), seconds per image and peak memory, ours vs diffusers on the same machine.
add_executable(bench_marigold ${CMAKE_CURRENT_LIST_DIR}/bench_marigold.c)
target_link_libraries(bench_marigold PRIVATE cmds_difftest cmds_warnings m)
cmds_add_test(NAME diffusion.bench_marigold_cpu COMMAND ${CMAKE_CURRENT_LIST_DIR}/bench_marigold.sh
              $<TARGET_FILE:bench_marigold> ${CMAKE_BINARY_DIR}/full_marigold cpu 800 4 1 LABELS bench diffusion TIMEOUT 3600)
cmds_add_test(NAME diffusion.bench_marigold_cuda COMMAND ${CMAKE_CURRENT_LIST_DIR}/bench_marigold.sh
              $<TARGET_FILE:bench_marigold> ${CMAKE_BINARY_DIR}/full_marigold cuda 800 4 5 LABELS bench diffusion cuda TIMEOUT 1800)

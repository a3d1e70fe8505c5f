# marigold: the whole normals procedure against diffusers' MarigoldNormalsPipeline
# (gen_diffusion_marigold.py: tiny random checkpoint, the same initial latents).
add_executable(test_marigold ${CMAKE_CURRENT_LIST_DIR}/test_marigold.c)
target_link_libraries(test_marigold PRIVATE cmds_kernels_diffusion cmds_testutil cmds_warnings m)
cmds_add_test(NAME diffusion.marigold COMMAND test_marigold ${CMDS_FIXTURES}/diffusion_marigold LABELS unit diffusion)

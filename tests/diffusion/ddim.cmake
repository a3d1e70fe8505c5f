# ddim: diffusers' DDIMScheduler over several configurations (gen_diffusion_ddim.py).
add_executable(test_ddim ${CMAKE_CURRENT_LIST_DIR}/test_ddim.c)
target_link_libraries(test_ddim PRIVATE cmds_kernels_diffusion cmds_testutil cmds_warnings m)
cmds_add_test(NAME diffusion.ddim COMMAND test_ddim ${CMDS_FIXTURES}/diffusion_ddim LABELS unit diffusion)

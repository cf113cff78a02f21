package io.dsflow.job;

import io.dsflow.job.cli.RunCommand;

/**
 * Entry point on a Flink cluster ({@code flink run -c io.dsflow.job.DsflowJob dsflow-flink-job.jar --config FILE}, or
 * the standalone-job container of docker-compose.yml): the same job as {@code dsflow run --config FILE}. It calls the
 * run command itself, not the command line, so that a failure reaches Flink as an exception with its cause instead of
 * an exit code.
 */
public final class DsflowJob {
    private DsflowJob() {
    }

    public static void main(String[] args) throws Exception {
        String[] run = new String[args.length + 1];
        run[0] = "run";
        System.arraycopy(args, 0, run, 1, args.length);
        RunCommand.run(run, System.out);
    }
}
